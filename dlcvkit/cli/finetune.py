"""`dlcvkit finetune`: the shared training options with an Office-Home `--data`, plus the settings A–E (one, or
several with --all-settings and their table) and the label fraction."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlcvkit.cli.options import TRAINING, option, recipe_overrides
from dlcvkit.errors import DlcvkitError
from dlcvkit.runs.training import run_training

OFFICE_HOME = option("data", Annotated[Optional[Path], typer.Option(
    "--data", help="Office-Home folder (train/ + train.csv, val/ + val.csv), or the training data alone.")], None)


class SettingName(str, Enum):
    A = "A"
    B = "B"
    C = "C"
    D = "D"
    E = "E"


def finetune(name: str, *, data: Path | None, val: Path | None, set_: list[str] | None, setting: SettingName | None,
              backbone: Path | None, all_settings: bool, settings: str, supervised: Path | None,
              byol_backbone: Path | None, tsne_every: int | None, label_fraction: float | None, **options) -> None:
    """One setting (or the recipe as it is), or with --all-settings A–E and their table."""
    from dlcvkit.data.office_home import office_home_splits
    from dlcvkit.runs.series import run_all_settings
    from dlcvkit.tasks.finetune import SETTINGS, setting_overrides

    if data is not None and val is None and (splits := office_home_splits(data)) is not None:
        data, val = splits
    overrides = recipe_overrides(set_, options.pop("cache"), options.pop("tracker"))
    if tsne_every is not None:
        overrides.append(f"viz.tsne_every={tsne_every}")
    if label_fraction is not None:
        overrides.append(f"label_fraction={label_fraction}")
    if not all_settings:
        if supervised is not None or byol_backbone is not None:
            raise DlcvkitError("--supervised and --byol go with --all-settings; with --setting use --backbone PATH")
        if setting is not None:
            overrides += setting_overrides(setting.value, backbone)
        elif backbone is not None:
            raise DlcvkitError("--backbone goes with --setting B–E (or set model.pretrained in the recipe)")
        run_training(name, recipe=options["recipe"], data=data, val=val, out=options["out"], overrides=overrides,
                     max_steps=options["max_steps"], resume=options["resume"], overwrite=options["overwrite"])
        return
    if setting is not None or backbone is not None or options["resume"] is not None:
        raise DlcvkitError("--all-settings runs every setting itself: drop --setting, --backbone and --resume")
    names = settings.replace(",", "").replace(" ", "").upper()
    if not names or any(n not in SETTINGS for n in names) or len(set(names)) < len(names):
        raise DlcvkitError(f"--settings {settings!r}: expected distinct letters of A–E, e.g. A,C")
    needs = {SETTINGS[n].source: n for n in names}
    for source, given, option_name in (("supervised", supervised, "--supervised"), ("byol", byol_backbone, "--byol")):
        if source in needs and given is None:
            raise DlcvkitError(f"--all-settings: setting {needs[source]} needs {option_name} PATH (its backbone file)")
    if options["out"] is None:
        raise DlcvkitError("--out DIR is required: the settings' runs go to DIR/A ... DIR/E, the table to DIR")
    if val is None:
        raise DlcvkitError("--all-settings reports validation accuracy: pass an Office-Home folder or --val")
    table = run_all_settings(options["recipe"], data, val, options["out"], overrides, options["max_steps"],
                             supervised, byol_backbone, options["overwrite"], names)
    if table is not None:
        _print_settings(*table)


def _print_settings(rows: list[dict], csv_path: Path, md_path: Path) -> None:
    from rich.console import Console
    from rich.table import Column, Table

    table = Table("setting", "pre-training", "fine-tuning", Column("validation accuracy", justify="right"),
                  title="Office-Home fine-tuning (best validation accuracy)")
    for r in rows:
        table.add_row(r["setting"], r["pretraining"], r["finetuning"], f"{r['acc']:.4f}")
    console = Console()
    console.print(table)
    console.print(f"table written to {csv_path} and {md_path}", highlight=False)


FINETUNE = (
    *(OFFICE_HOME if p.name == "data" else p for p in TRAINING),
    option("setting", Annotated[Optional[SettingName], typer.Option(
        "--setting", help="A scratch; B/D supervised backbone, full/frozen; C/E BYOL backbone, full/frozen.")], None),
    option("backbone", Annotated[Optional[Path], typer.Option(
        "--backbone", help="Backbone file of settings B–E (.safetensors, or a torchvision .pt/.pth state dict).")],
        None),
    option("all_settings", Annotated[bool, typer.Option(
        "--all-settings", help="Run A–E (or --settings) into OUT/A ... OUT/E and write the table.")],
        False),
    option("settings", Annotated[str, typer.Option(
        "--settings", help="--all-settings: which settings to run, e.g. A,C (semi-supervised: scratch vs BYOL).")],
        "ABCDE"),
    option("label_fraction", Annotated[Optional[float], typer.Option(
        "--label-fraction", help="Train on this class-balanced share of the labels, e.g. 0.01 or 0.1 (sets "
                                 "label_fraction; the files used: RUN_DIR/labels_subset.txt).")], None),
    option("supervised", Annotated[Optional[Path], typer.Option(
        "--supervised", help="--all-settings: the supervised backbone file (settings B, D).")], None),
    option("byol_backbone", Annotated[Optional[Path], typer.Option(
        "--byol", help="--all-settings: our BYOL backbone.safetensors (settings C, E).")], None),
    option("tsne_every", Annotated[Optional[int], typer.Option(
        "--tsne-every", help="A t-SNE picture of the validation features every K epochs (RUN_DIR/tsne/).")], None),
)
