"""The training commands, one per task of the registry (`dlcvkit classify`, `segment`, `byol`, `finetune`): the
shared training options plus a task's own, turned into one call of `run_training` (or, for fine-tuning settings
A–E together, of `run_all_settings`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlcvkit.cli.options import TRAINING, CacheMode, option, with_cache, with_options
from dlcvkit.errors import DlcvkitError
from dlcvkit.tasks.registry import TASKS, run_training


def register(app: typer.Typer) -> None:
    """`dlcvkit NAME` for every task NAME of the registry: its options and what it runs are OWN[NAME]'s, else the
    shared training options and `run_training`."""
    for name, entry in TASKS.items():
        params, run = OWN.get(name, (TRAINING, _train))
        app.command(name, help=entry.help)(with_options(*params)(_command(run, name)))


def _command(run: Callable[..., None], name: str) -> Callable[..., None]:
    def command(**options) -> None:
        run(name, **options)

    return command


def _train(name: str, *, recipe: Path | None, data: str | None, out: Path | None, set_: list[str] | None,
           max_steps: int, resume: Path | None, overwrite: bool, cache: CacheMode | None, val: str | None = None,
           overrides: tuple[str, ...] = ()) -> None:
    run_training(name, recipe=recipe, data=data, val=val, out=out, overrides=[*with_cache(set_, cache), *overrides],
                 max_steps=max_steps, resume=resume, overwrite=overwrite)


def _segment(name: str, *, track: str | None, **options) -> None:
    """--track 0008,0097 sets viz.track."""
    names = [n.strip() for n in track.split(",") if n.strip()] if track is not None else None
    _train(name, **options, overrides=(f"viz.track={json.dumps(names)}",) if track is not None else ())


class SettingName(str, Enum):
    A = "A"
    B = "B"
    C = "C"
    D = "D"
    E = "E"


def _finetune(name: str, *, data: str | None, val: str | None, set_: list[str] | None, setting: SettingName | None,
              backbone: Path | None, all_settings: bool, settings: str, supervised: Path | None,
              byol_backbone: Path | None, tsne_every: int | None, label_fraction: float | None, **options) -> None:
    """One setting (or the recipe as it is), or with --all-settings A–E and their table."""
    from dlcvkit.tasks.finetune import SETTINGS, office_home_splits, run_all_settings, setting_overrides

    if data is not None and val is None and (splits := office_home_splits(data)) is not None:
        data, val = (str(p) for p in splits)
    overrides = with_cache(set_, options.pop("cache"))
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
        _train(name, data=data, val=val, set_=overrides, cache=None, **options)
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
    from rich.table import Table

    table = Table(title="Office-Home fine-tuning (best validation accuracy)")
    for column in ("setting", "pre-training", "fine-tuning", "validation accuracy"):
        table.add_column(column, justify="right" if column == "validation accuracy" else "left")
    for r in rows:
        table.add_row(r["setting"], r["pretraining"], r["finetuning"], f"{r['acc']:.4f}")
    console = Console()
    console.print(table)
    console.print(f"table written to {csv_path} and {md_path}", highlight=False)


FINETUNE = (
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
OFFICE_HOME = option("data", Annotated[Optional[str], typer.Option(
    "--data", help="Office-Home folder (train/ + train.csv, val/ + val.csv), or the training data alone.")], None)
TRACK = option("track", Annotated[Optional[str], typer.Option(
    "--track", help="Validation images to predict after every epoch, e.g. 0008,0097,0107 (sets viz.track; "
                    "RUN_DIR/track.png shows them at the end).")], None)

# a task's own options and command, where they are not the shared ones and `run_training`
OWN = {
    "byol": (tuple(p for p in TRAINING if p.name != "val"), _train),
    "segment": ((*TRAINING, TRACK), _segment),
    "finetune": ((*(OFFICE_HOME if p.name == "data" else p for p in TRAINING), *FINETUNE), _finetune),
}
