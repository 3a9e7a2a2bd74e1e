"""`dlcvkit data ...`: synthetic data sets in the course layouts."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from dlcvkit.cli.options import OverwriteOpt

app = typer.Typer(help="Make data sets: synthetic ones in every course layout.", no_args_is_help=True,
                  epilog="Example: dlcvkit data synth cls --out data/cls")


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
        summary = generators.synth_seg(out, n, size, seed, overwrite=overwrite)
    else:
        classes = default_classes if classes is None else classes
        make = {"cls": generators.synth_cls, "ssl": generators.synth_ssl, "officehome": generators.synth_officehome}
        summary = make[kind.value](out, n, size, classes, seed, overwrite=overwrite)
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
