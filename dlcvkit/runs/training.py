"""A training run, which every training command calls: the recipe of a new or resumed run, its Task (the recipe
`resolve`d against its training data), trained by the engine, then the run's report."""

from __future__ import annotations

from pathlib import Path

from dlcvkit.errors import DlcvkitError
from dlcvkit.runnames import RECIPE_FILE
from dlcvkit.tasks.registry import TASKS, build_task, recorded_task, task_classes


# Keys that may change when a run is resumed without changing what it computes.
RESUME_SAFE_KEYS = (
    "data.train", "data.val", "data.num_workers", "data.eval_batch_size", "data.cache", "data.cache_dir",
    "train.log_every", "train.ckpt_every", "train.keep_last", "train.tensorboard", "train.eval_every",
    "train.trackers", "train.progress_seconds",
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
    saved_path = resume / RECIPE_FILE
    kind, expected = recorded_task(resume, "--resume"), recipe_cls().task
    if kind != expected and kind in TASKS:
        raise DlcvkitError(f"--resume {resume} is a {kind} run (made by `dlcvkit {kind}`), not a {expected} run; "
                           f"continue it with `dlcvkit {kind} --resume {resume}`")
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


def run_training(name: str, *, recipe: Path | None, data: Path | None, val: Path | None, out: Path | None,
                 overrides: list[str] | None, max_steps: int, resume: Path | None, overwrite: bool = False) -> dict:
    """Train task `name`: resolve the recipe, build the task, run the engine (replacing the run in `out` with
    `overwrite`) and write the run's report (main process); returns `fit`'s summary."""
    from accelerate import PartialState

    from dlcvkit.engine.loop import fit
    from dlcvkit.engine.runlog import end_of_run
    from dlcvkit.report import write_run_report

    overrides = list(overrides or [])
    if data is not None:
        overrides.append(f"data.train={_toml_string(str(data))}")
    if val is not None:
        overrides.append(f"data.val={_toml_string(str(val))}")
    if resume is not None and out is not None and Path(out) != Path(resume):
        raise DlcvkitError("--resume RUN_DIR continues that folder; do not also pass a different --out")
    run_dir = resume if resume is not None else out
    if run_dir is None:
        raise DlcvkitError("--out RUN_DIR is required: the folder for the run's recipe, logs and checkpoints")
    if max_steps < 0:
        raise DlcvkitError("--max-steps must be >= 0")
    resolved = resolve_recipe(task_classes(name)[0], recipe, resume, overrides)
    task = build_task(resolved)
    summary = fit(task, Path(run_dir), max_steps=max_steps, resume=resume is not None, overwrite=overwrite)
    if PartialState().is_main_process:
        write_run_report(Path(run_dir))
        print("\n".join(end_of_run(summary, Path(run_dir), task.run_files)), flush=True)
    return summary


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
