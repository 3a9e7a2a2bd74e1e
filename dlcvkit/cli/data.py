"""`dlcvkit data ...`: synthetic data sets in the course layouts, and real ones exported into them."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlcvkit.cli.options import OverwriteOpt

app = typer.Typer(help="Make data sets: synthetic ones in every course layout.", no_args_is_help=True,
                  epilog="Example: dlcvkit data synth cls --out data/cls")
export_app = typer.Typer(help="Write real data sets in the P1 and CSV layouts.", no_args_is_help=True,
                         epilog="Example: dlcvkit data export fashion-mnist --out fashion")
app.add_typer(export_app, name="export")


class SynthKind(str, Enum):
    cls = "cls"
    ssl = "ssl"
    officehome = "officehome"
    seg = "seg"


# kind -> (n, size, classes); seg always has the 7 land-cover classes
SYNTH_DEFAULTS = {"cls": (500, 32, 10), "ssl": (1000, 64, 10), "officehome": (500, 64, 10), "seg": (20, 512, None)}


@app.command()
def synth(
    kind: SynthKind = typer.Argument(
        ...,
        help="cls: P1 {label}_{index}.png; ssl: unlabeled Mini-ImageNet *.jpg; "
        "officehome: train/, val/ + CSVs; seg: P2 xxxx_sat.jpg + xxxx_mask.png.",
    ),
    out: Path = typer.Option(..., "--out", help="Folder to write (created; must be empty unless --overwrite)."),
    n: int | None = typer.Option(
        None, "--n", help="Number of images (default: cls 500, ssl 1000, officehome 500, seg 20)."
    ),
    size: int | None = typer.Option(
        None, "--img-size", help="Image side in pixels (default: cls 32, ssl and officehome 64, seg 512)."
    ),
    classes: int | None = typer.Option(
        None, "--classes", help="Object classes, 1..70 (default: 10); not for seg (always the 7 land-cover classes)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes byte-identical files."),
    geotiff: bool = typer.Option(False, "--geotiff", help="seg: georeferenced multispectral xxxx_sat.tif "
                                                          "(uint16, EPSG:32633) instead of xxxx_sat.jpg."),
    bands: int | None = typer.Option(None, "--bands", help="seg --geotiff: bands per raster, 1..13 (default 4: "
                                                           "RGB + near-infrared-like)."),
    palette: str = typer.Option("random", "--palette", help="Object colours: random per image, or fixed grey levels "
                                "(for self-supervised learning, which would match the palettes); not for seg."),
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a small, seeded, learnable synthetic data set in a course layout.

    Example: dlcvkit data synth seg --out data/seg --n 20 --img-size 64
    """
    from dlcvkit.data import synth as generators  # torch and numpy only when a data set is made
    from dlcvkit.errors import DlcvkitError

    default_n, default_size, default_classes = SYNTH_DEFAULTS[kind.value]
    n = default_n if n is None else n
    size = default_size if size is None else size
    if kind is SynthKind.seg:
        if classes is not None:
            raise DlcvkitError("--classes does not apply to seg, which always has the 7 land-cover classes; drop it")
        if palette != "random":
            raise DlcvkitError("--palette does not apply to seg, whose classes have their own colours; drop it")
        if bands is not None and not geotiff:
            raise DlcvkitError("--bands goes with --geotiff (JPEGs hold 3 bands); add --geotiff or drop --bands")
        summary = generators.synth_seg(out, n, size, seed, overwrite=overwrite,
                                       bands=(bands or 4) if geotiff else None)
    else:
        if geotiff or bands is not None:
            raise DlcvkitError("--geotiff and --bands apply to seg only; drop them")
        classes = default_classes if classes is None else classes
        make = {"cls": generators.synth_cls, "ssl": generators.synth_ssl, "officehome": generators.synth_officehome}
        summary = make[kind.value](out, n, size, classes, seed, overwrite=overwrite, palette=palette)
    typer.echo(summary)


@app.command("export-digits")
def export_digits(
    out: Path = typer.Option(..., "--out", help="Folder to write train/ and val/ into (created; must be empty unless --overwrite)."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Share of each class put in val/."),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/val split."),
    overwrite: OverwriteOpt = False,
) -> None:
    """Write scikit-learn's real handwritten digits (1,797 8x8 images, no download) in the P1 layout.

    Example: dlcvkit data export-digits --out digits
    """
    from dlcvkit.data.digits import export_digits as write_digits

    typer.echo(write_digits(out, val_fraction, seed, overwrite=overwrite))


IdxOutOpt = Annotated[Path, typer.Option(
    "--out", help="Folder to write train/, val/, train.csv and val.csv into (created; must be empty unless --overwrite).")]
FractionOpt = Annotated[Optional[float], typer.Option(
    "--fraction", help="Keep this share of each class of each split (a class-balanced subset), e.g. 0.1.")]
PerClassOpt = Annotated[Optional[int], typer.Option(
    "--per-class", help="Keep this many images of each class of each split.")]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # where Debian's package dataset-fashion-mnist puts it
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the subset (--fraction, --per-class).")]


@export_app.command("idx")
def export_idx(
    source: Path = typer.Option(..., "--from", help="Folder of MNIST-format IDX files (train-images-idx3-ubyte[.gz], "
                                                    "train-labels-..., t10k-images-..., t10k-labels-...)."),
    out: IdxOutOpt = ..., fraction: FractionOpt = None, per_class: PerClassOpt = None, seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write an MNIST-family data set (IDX files) as train/ and val/ (the t10k split) in the P1 and CSV layouts.

    Example: dlcvkit data export idx --from mnist_idx --out mnist --per-class 100
    """
    from dlcvkit.data.idx import export_idx as write_idx_export

    typer.echo(write_idx_export(source, out, fraction=fraction, per_class=per_class, seed=seed, overwrite=overwrite))


@export_app.command("fashion-mnist")
def export_fashion_mnist(
    source: Path = typer.Option(FASHION_MNIST, "--from",
                                help="Folder of Fashion-MNIST's IDX files (Debian: apt-get install -y "
                                     "dataset-fashion-mnist)."),
    out: IdxOutOpt = ..., fraction: FractionOpt = None, per_class: PerClassOpt = None, seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write Fashion-MNIST (60,000 train + 10,000 test 28x28 grey images, 10 classes) like `data export idx`.

    Example: dlcvkit data export fashion-mnist --out fashion --fraction 0.1
    """
    from dlcvkit.data.idx import export_idx as write_idx_export
    from dlcvkit.errors import DlcvkitError

    if not source.is_dir():
        raise DlcvkitError(f"--from {source} does not exist: install Fashion-MNIST with "
                           "`apt-get install -y dataset-fashion-mnist`, or pass the folder of its IDX files")
    typer.echo(write_idx_export(source, out, fraction=fraction, per_class=per_class, seed=seed, overwrite=overwrite))
