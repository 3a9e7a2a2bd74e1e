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

from dlcvkit.cli.options import TRAINING, CacheMode, Tracker, option, recipe_overrides, with_options
from dlcvkit.errors import DlcvkitError
from dlcvkit.tasks.registry import TASKS, run_training


def register(app: typer.Typer) -> None:
    """`dlcvkit NAME` for every task NAME of the registry: its options and what it runs are OWN[NAME]'s, else the
    shared training options and `run_training`."""
    for name, entry in TASKS.items():
        params, run = OWN.get(name, (TRAINING, _train))
        app.command(name, help=entry.help, epilog=f"Example: {EXAMPLES[name]}")(
            with_options(*params)(_command(run, name)))


EXAMPLES = {
    "byol": "dlcvkit byol --recipe byol_resnet50_mini --data mini/train --out runs/byol",
    "classify": "dlcvkit classify --recipe cls_p1_vgg16bn --data train_50 --val val_50 --out runs/vgg16bn",
    "finetune": "dlcvkit finetune --recipe finetune_officehome --setting C --backbone runs/byol/backbone.safetensors "
                "--data office --out runs/ft_C",
    "segment": "dlcvkit segment --recipe seg_fcn8s_vgg16 --data p2/train --val p2/validation --out runs/fcn8s",
}


def _command(run: Callable[..., None], name: str) -> Callable[..., None]:
    def command(**options) -> None:
        run(name, **options)

    return command


def _train(name: str, *, recipe: Path | None, data: Path | None, out: Path | None, set_: list[str] | None,
           max_steps: int, resume: Path | None, overwrite: bool, cache: CacheMode | None,
           tracker: list[Tracker] | None, val: Path | None = None, overrides: tuple[str, ...] = ()) -> None:
    run_training(name, recipe=recipe, data=data, val=val, out=out,
                 overrides=[*recipe_overrides(set_, cache, tracker), *overrides], max_steps=max_steps, resume=resume,
                 overwrite=overwrite)


def _byol(name: str, *, monitor: Path | None, **options) -> None:
    """--monitor DIR sets monitor.data."""
    _train(name, **options, overrides=(f"monitor.data={json.dumps(str(monitor))}",) if monitor is not None else ())


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


def _finetune(name: str, *, data: Path | None, val: Path | None, set_: list[str] | None, setting: SettingName | None,
              backbone: Path | None, all_settings: bool, supervised: Path | None, byol_backbone: Path | None,
              tsne_every: int | None, **options) -> None:
    """One setting (or the recipe as it is), or with --all-settings A–E and their table."""
    from dlcvkit.tasks.finetune import office_home_splits, run_all_settings, setting_overrides

    if data is not None and val is None and (splits := office_home_splits(data)) is not None:
        data, val = splits
    overrides = recipe_overrides(set_, options.pop("cache"), options.pop("tracker"))
    if tsne_every is not None:
        overrides.append(f"viz.tsne_every={tsne_every}")
    if not all_settings:
        if supervised is not None or byol_backbone is not None:
            raise DlcvkitError("--supervised and --byol go with --all-settings; with --setting use --backbone PATH")
        if setting is not None:
            overrides += setting_overrides(setting.value, backbone)
        elif backbone is not None:
            raise DlcvkitError("--backbone goes with --setting B–E (or set model.pretrained in the recipe)")
        _train(name, data=data, val=val, set_=overrides, cache=None, tracker=None, **options)
        return
    if setting is not None or backbone is not None or options["resume"] is not None:
        raise DlcvkitError("--all-settings runs every setting itself: drop --setting, --backbone and --resume")
    if supervised is None or byol_backbone is None:
        raise DlcvkitError("--all-settings needs --supervised PATH (settings B, D) and --byol PATH (settings C, E)")
    if options["out"] is None:
        raise DlcvkitError("--out DIR is required: the settings' runs go to DIR/A ... DIR/E, the table to DIR")
    if val is None:
        raise DlcvkitError("--all-settings reports validation accuracy: pass an Office-Home folder or --val")
    table = run_all_settings(options["recipe"], data, val, options["out"], overrides, options["max_steps"],
                             supervised, byol_backbone, options["overwrite"])
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
    option("setting", Annotated[Optional[SettingName], typer.Option(
        "--setting", help="A scratch; B/D supervised backbone, full/frozen; C/E BYOL backbone, full/frozen.")], None),
    option("backbone", Annotated[Optional[Path], typer.Option(
        "--backbone", help="Backbone file of settings B–E (.safetensors, or a torchvision .pt/.pth state dict).")],
        None),
    option("all_settings", Annotated[bool, typer.Option(
        "--all-settings", help="Run A–E into OUT/A ... OUT/E and write the table (needs --supervised and --byol).")],
        False),
    option("supervised", Annotated[Optional[Path], typer.Option(
        "--supervised", help="--all-settings: the supervised backbone file (settings B, D).")], None),
    option("byol_backbone", Annotated[Optional[Path], typer.Option(
        "--byol", help="--all-settings: our BYOL backbone.safetensors (settings C, E).")], None),
    option("tsne_every", Annotated[Optional[int], typer.Option(
        "--tsne-every", help="A t-SNE picture of the validation features every K epochs (RUN_DIR/tsne/).")], None),
)
OFFICE_HOME = option("data", Annotated[Optional[Path], typer.Option(
    "--data", help="Office-Home folder (train/ + train.csv, val/ + val.csv), or the training data alone.")], None)
TRACK = option("track", Annotated[Optional[str], typer.Option(
    "--track", help="Validation images to predict after every epoch, e.g. 0008,0097,0107 (sets viz.track; "
                    "RUN_DIR/track.png shows them at the end).")], None)
MONITOR = option("monitor", Annotated[Optional[Path], typer.Option(
    "--monitor", help="Labelled images to watch the encoder learn: kNN accuracy of its features every "
                      "train.eval_every epochs, in metrics.jsonl and the curves (sets monitor.data).")], None)

# a task's own options and command, where they are not the shared ones and `run_training`
OWN = {
    "byol": ((*(p for p in TRAINING if p.name != "val"), MONITOR), _byol),
    "segment": ((*TRAINING, TRACK), _segment),
    "finetune": ((*(OFFICE_HOME if p.name == "data" else p for p in TRAINING), *FINETUNE), _finetune),
}
