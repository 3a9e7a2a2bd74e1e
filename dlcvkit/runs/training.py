"""A training run, which every training command calls: the recipe of a new or resumed run, its Task (the recipe
`resolve`d against its training data), trained by the engine, then the run's report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dlcvkit.errors import DlcvkitError
from dlcvkit.runnames import RECIPE_FILE
from dlcvkit.tasks.registry import TASKS, build_task, recorded_task, task_classes


# Keys that may change when a run is resumed without changing what it computes.
RESUME_SAFE_KEYS = (
    "data.train", "data.val", "data.num_workers", "data.eval_batch_size", "data.cache", "data.cache_dir",
    "train.log_every", "train.ckpt_every", "train.keep_checkpoints", "train.tensorboard", "train.eval_every",
    "train.trackers", "train.progress_seconds", "train.resume",
)
AUTO = "auto"  # --resume auto: continue the run in --out if it has a checkpoint, else start it


def resolve_recipe(recipe_cls, recipe: Path | None, resume: Path | None, overrides: list[str], task_cls=None):
    """The recipe of a new run (file + overrides) or of a resumed one (its saved recipe, where only
    RESUME_SAFE_KEYS may differ from a given --recipe or --set, once `task_cls` resolved what the data decides:
    the first start's own command line is always accepted)."""
    from dlcvkit.config import flat_recipe, load_recipe, recipe_differences

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
    if changed and task_cls is not None:  # e.g. model.num_classes 0, which the first start resolved from the data
        wanted = task_cls.resolve(wanted)
        changed = recipe_differences(saved, wanted, ignore=RESUME_SAFE_KEYS)
    if changed:
        run, now = flat_recipe(saved), flat_recipe(wanted)
        shown = ", ".join(f"{k} ({run[k]!r} in the run, {now[k]!r} now)" for k in changed[:4])
        shown += " ..." if len(changed) > 4 else ""
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
    recipe_cls, task_cls = task_classes(name)
    if resume is None and out is None:  # said before the recipe is read: no run can go anywhere without it
        raise DlcvkitError("--out RUN_DIR is required: the folder for the run's recipe, logs and checkpoints")
    if resume is not None and str(resume) == AUTO or resume is None and _recipe_says_auto(recipe_cls, recipe, overrides):
        resume = auto_resume(out, overwrite)
    if resume is not None and out is not None and Path(out) != Path(resume):
        raise DlcvkitError("--resume RUN_DIR continues that folder; do not also pass a different --out")
    run_dir = resume if resume is not None else out
    if max_steps < 0:
        raise DlcvkitError("--max-steps must be >= 0")
    resolved = resolve_recipe(recipe_cls, recipe, resume, overrides, task_cls)
    task = build_task(resolved)
    summary = fit(task, Path(run_dir), max_steps=max_steps, resume=resume is not None, overwrite=overwrite)
    if PartialState().is_main_process:
        write_run_report(Path(run_dir))
        print("\n".join(end_of_run(summary, Path(run_dir), task.run_files)), flush=True)
    return summary


def _recipe_says_auto(recipe_cls, recipe: Path | None, overrides: list[str]) -> bool:
    """Whether a new run's recipe (with its --set) has `train.resume = "auto"`."""
    from dlcvkit.config import load_recipe

    return recipe is not None and load_recipe(recipe, recipe_cls, overrides).train.resume == AUTO


def auto_resume(out: Path | None, overwrite: bool) -> Path | None:
    """--resume auto: the run folder to continue (OUT, when it holds a complete checkpoint; `latest` then names the
    newest one whose files are intact), or None to start a new run in OUT. Says which in one line."""
    from dlcvkit.engine.checkpoint import checkpoint_root, newest_complete_checkpoint, point_latest

    if out is None:
        raise DlcvkitError("--resume auto needs --out RUN_DIR: the run folder it continues, or starts when it holds none")
    if overwrite:
        raise DlcvkitError("--resume auto continues the run in --out; --overwrite would start it anew: pass one")
    out = Path(out)
    checkpoint, passed = newest_complete_checkpoint(out) if (out / RECIPE_FILE).is_file() else (None, [])
    passed_over = f" (passed over: {', '.join(passed)})" if passed else ""
    if checkpoint is None:
        if passed:
            raise DlcvkitError(f"--resume auto: no checkpoint in {checkpoint_root(out)} can be continued{passed_over}; "
                               f"start the run anew with --overwrite, or choose another --out")
        _say(f"--resume auto: no checkpoint in {out}: starting a new run there")
        return None
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    step, total = state["step"], state.get("total_steps", "?")
    _say(f"--resume auto: continuing the run in {out} from {checkpoint.parent.name}/{checkpoint.name} (step {step} "
         f"of {total}){passed_over}")
    if passed and _main_process():  # what --resume loads; each process chose the same one
        point_latest(checkpoint)
    return out


def _main_process() -> bool:
    from dlcvkit.engine.distributed import is_launch_main_process  # here: the CLI starts without torch

    return is_launch_main_process()


def _say(line: str) -> None:
    if _main_process():
        print(f"dlcvkit: {line}", file=sys.stderr, flush=True)


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
