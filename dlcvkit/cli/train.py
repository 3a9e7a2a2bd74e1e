"""The training commands, one per task of the registry (`dlcvkit classify`, `segment`, `byol`, `dino`, `simclr`,
`finetune`): the shared training options plus a task's own (fine-tuning's in dlcvkit.cli.finetune), turned into
one call of `run_training`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlcvkit.cli.finetune import FINETUNE, finetune
from dlcvkit.cli.options import TRAINING, CacheMode, Tracker, option, recipe_overrides, with_options
from dlcvkit.runs.training import run_training
from dlcvkit.tasks.registry import TASKS


def register(app: typer.Typer) -> None:
    """`dlcvkit NAME` for every task NAME of the registry: its options and what it runs are OWN[NAME]'s, else the
    shared training options and `run_training`."""
    for name, entry in TASKS.items():
        params, run = OWN.get(name, (TRAINING, _train))
        app.command(name, help=entry.help, epilog=f"Example: {entry.example}")(
            with_options(*params)(_command(run, name)))


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


def _ssl(name: str, *, monitor: Path | None, **options) -> None:
    """--monitor DIR sets monitor.data."""
    _train(name, **options, overrides=(f"monitor.data={json.dumps(str(monitor))}",) if monitor is not None else ())


def _segment(name: str, *, track: str | None, **options) -> None:
    """--track 0008,0097 sets viz.track."""
    names = [n.strip() for n in track.split(",") if n.strip()] if track is not None else None
    _train(name, **options, overrides=(f"viz.track={json.dumps(names)}",) if track is not None else ())


TRACK = option("track", Annotated[Optional[str], typer.Option(
    "--track", help="Validation images to predict after every epoch, e.g. 0008,0097,0107 (sets viz.track; "
                    "RUN_DIR/track.png shows them at the end).")], None)
MONITOR = option("monitor", Annotated[Optional[Path], typer.Option(
    "--monitor", help="Labelled images to watch the encoder learn: kNN accuracy of its features every "
                      "train.eval_every epochs, in metrics.jsonl and the curves (sets monitor.data).")], None)

# a task's own options and command, where they are not the shared ones and `run_training`
OWN = {
    **{name: ((*(p for p in TRAINING if p.name != "val"), MONITOR), _ssl) for name in ("byol", "dino", "simclr")},
    "segment": ((*TRAINING, TRACK), _segment),
    "finetune": (FINETUNE, finetune),
}
