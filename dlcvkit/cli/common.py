"""Options the commands share, and the one function that turns a training command into a run of the engine."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlcvkit.errors import DlcvkitError

RecipeOpt = Annotated[
    Optional[Path], typer.Option("--recipe", "-r", help="Recipe TOML, a run folder to copy its recipe, or the name of "
                                                        "a shipped recipe (`dlcvkit recipes` lists them).")
]
DataOpt = Annotated[Optional[str], typer.Option("--data", help="Training data (sets data.train).")]
ValOpt = Annotated[Optional[str], typer.Option("--val", help="Validation data (sets data.val).")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder to create (RUN_DIR).")]
SetOpt = Annotated[
    Optional[list[str]], typer.Option("--set", help="Override a recipe key, e.g. --set optim.lr=0.1 (repeatable).")
]
MaxStepsOpt = Annotated[
    int, typer.Option("--max-steps", help="Stop after N optimizer steps; the LR and EMA schedules are unchanged.")
]
ResumeOpt = Annotated[
    Optional[Path], typer.Option("--resume", help="Continue the run in RUN_DIR from its latest checkpoint.")
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace existing outputs: files of the names this command writes (never an "
                                           "input), or the run in a dlcvkit run folder (only dlcvkit's files).")
]

SkipBadOpt = Annotated[
    bool, typer.Option("--skip-bad", help="Leave out images that cannot be decoded (all are decoded once first; "
                                          "how many were left out is printed).")
]
PredictSkipBadOpt = Annotated[
    bool, typer.Option("--skip-bad", help="Predict every image that decodes (all are decoded once first) and name "
                                          "the others at the end, with exit code 2: the output is incomplete.")
]


class CacheMode(str, Enum):
    none = "none"
    memory = "memory"
    disk = "disk"


CacheOpt = Annotated[
    Optional[CacheMode], typer.Option("--cache", help="Decode every image once (data.cache): memory (shared by the "
                                                      "loader workers) or disk (also kept for later runs, in the "
                                                      "recipe's data.cache_dir).")
]


def with_cache(overrides: list[str] | None, cache: CacheMode | None) -> list[str]:
    """The --set overrides, with --cache as `data.cache` if given."""
    return list(overrides or []) + ([f"data.cache={cache.value}"] if cache is not None else [])


# Keys that may change when a run is resumed without changing what it computes.
RESUME_SAFE_KEYS = (
    "data.train", "data.val", "data.num_workers", "data.eval_batch_size", "data.cache", "data.cache_dir",
    "train.log_every", "train.ckpt_every", "train.keep_last", "train.tensorboard", "train.eval_every",
)


def resolve_recipe(recipe_cls, recipe: Path | None, resume: Path | None, overrides: list[str]):
    """The recipe of a new run (file + overrides) or of a resumed one (its saved recipe, where only
    RESUME_SAFE_KEYS may differ from a given --recipe or --set)."""
    from dlcvkit.config import load_recipe, recipe_differences

    if resume is None:
        if recipe is None:
            raise DlcvkitError(
                "--recipe is required for a new run (`dlcvkit recipes` lists the shipped ones), or --resume RUN_DIR"
            )
        return load_recipe(recipe, recipe_cls, overrides)
    saved_path = resume / "recipe.toml"
    if not saved_path.is_file():
        raise DlcvkitError(f"--resume {resume}: not a dlcvkit run folder (no recipe.toml)")
    saved = load_recipe(saved_path, recipe_cls)
    wanted = load_recipe(recipe or saved_path, recipe_cls, overrides)
    changed = recipe_differences(saved, wanted, ignore=RESUME_SAFE_KEYS)
    if changed:
        shown = ", ".join(changed[:6]) + (" ..." if len(changed) > 6 else "")
        raise DlcvkitError(
            f"--resume {resume}: the recipe differs from the run's own in {shown}; resume with the run's recipe "
            "(omit --recipe) or start a new run with --out"
        )
    return wanted


def run_training(task_cls, recipe_cls, *, recipe: Path | None, data: str | None, val: str | None,
                 out: Path | None, overrides: list[str] | None, max_steps: int, resume: Path | None,
                 overwrite: bool = False) -> dict:
    """Resolve the recipe, build the task and run the engine; returns `fit`'s summary."""
    from dlcvkit.engine.loop import fit

    overrides = list(overrides or [])
    if data is not None:
        overrides.append(f"data.train={_toml_string(data)}")
    if val is not None:
        overrides.append(f"data.val={_toml_string(val)}")
    if resume is not None and out is not None and Path(out) != Path(resume):
        raise DlcvkitError("--resume RUN_DIR continues that folder; do not also pass a different --out")
    run_dir = resume if resume is not None else out
    if run_dir is None:
        raise DlcvkitError("--out RUN_DIR is required: the folder for the run's recipe, logs and checkpoints")
    if max_steps < 0:
        raise DlcvkitError("--max-steps must be >= 0")
    resolved = resolve_recipe(recipe_cls, recipe, resume, overrides)
    return fit(task_cls(resolved), Path(run_dir), max_steps=max_steps, resume=resume is not None, overwrite=overwrite)


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
