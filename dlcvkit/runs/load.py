"""A finished run from its folder alone: its resolved recipe, its weights file, its model for inference."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch
from accelerate import init_empty_weights
from torch import nn

from dlcvkit.config import RANGES, DataConfig, Recipe, load_recipe
from dlcvkit.data.unreadable import skip_unreadable
from dlcvkit.engine.weights import load_weights, read_state_dict
from dlcvkit.errors import DlcvkitError
from dlcvkit.runnames import BEST_FILE, EMA_FILE, MODEL_FILE, RECIPE_FILE
from dlcvkit.tasks.registry import recorded_task, task_classes


def run_recipe(run_dir: Path) -> Recipe:
    """The resolved recipe a run folder was trained with."""
    return load_recipe(Path(run_dir) / RECIPE_FILE, task_classes(recorded_task(run_dir, "--run"))[0])


CLASSIFIERS = ("classify", "finetune")  # the tasks whose model is an image classifier
# what a finished run of each task is used with: where a message about a run of the wrong task points to
USED_BY = {
    "classify": "`dlcvkit eval cls`, `predict cls`, `tsne` and `export`",
    "finetune": "`dlcvkit eval cls`, `predict cls`, `tsne` and `export`",
    "segment": "`dlcvkit eval seg`, `predict seg`, `export` and `sam --refine-run`",
    **dict.fromkeys(("byol", "dino", "simclr"),
                    "its backbone.safetensors: `dlcvkit eval probe --backbone` and `dlcvkit finetune --backbone`"),
}


def check_run_kind(run_dir: Path, kinds: tuple[str, ...]) -> None:
    """Refuse `--run RUN_DIR` unless one of the tasks `kinds` made it, saying what it is and what takes it."""
    kind = recorded_task(run_dir, "--run")
    if kind not in kinds:
        raise wrong_kind(run_dir, kind, kinds)


def wrong_kind(run_dir: Path, kind: str, kinds: tuple[str, ...]) -> DlcvkitError:
    """The error for `--run RUN_DIR`, a run of task `kind` where one of `kinds` is needed."""
    task_classes(kind)  # a task that does not exist is named as such
    wanted = " or ".join(kinds) if len(kinds) < 3 else f"{', '.join(kinds[:-1])} or {kinds[-1]}"
    return DlcvkitError(f"--run {run_dir} is a {kind} run (made by `dlcvkit {kind}`), not a {wanted} run; "
                        f"a {kind} run is used by {USED_BY[kind]}")


def data_or_validation(run_dir: Path, data: Path | None, kinds: tuple[str, ...]) -> tuple[Path, str]:
    """(`data`, "") if given, else (the validation data the run's recipe names, a note saying so): a command
    given --run alone evaluates on the data the run was validated on. The run must be one of task `kinds`."""
    check_run_kind(run_dir, kinds)
    if data is not None:
        return data, ""
    val = run_recipe(run_dir).data.val
    if not val:
        raise DlcvkitError(f"--run {run_dir}: its recipe names no validation data (data.val); pass --data DIR")
    if not Path(val).exists():
        raise DlcvkitError(f"--run {run_dir}: its validation data {val} (data.val of its recipe.toml) is not there "
                           "from this folder; pass --data DIR")
    return Path(val), f"--data {val}: the validation data of --run {run_dir} (data.val of its recipe)"


# --weights -> the files tried in turn; the engine writes ema.safetensors beside model.safetensors
WEIGHT_FILES = {"best": (BEST_FILE, MODEL_FILE), "last": (MODEL_FILE,), "ema": (EMA_FILE,)}


def run_weights(run_dir: Path, weights: str = "best") -> Path:
    """`best.safetensors` (if the run kept one and `weights` is "best"), else `model.safetensors`; with "ema"
    the model EMA's `ema.safetensors`."""
    run_dir = Path(run_dir)
    if weights not in WEIGHT_FILES:
        raise DlcvkitError(f"--weights {weights!r}: expected one of {', '.join(WEIGHT_FILES)}")
    for name in WEIGHT_FILES[weights]:
        if (run_dir / name).is_file():
            return run_dir / name
    if weights == "ema":
        raise DlcvkitError(f"--weights ema: {run_dir / EMA_FILE} does not exist (was the run trained with "
                           "train.model_ema > 0?)")
    raise DlcvkitError(f"--run {run_dir}: no model.safetensors yet (has the run finished or reached --max-steps?)")


def load_run(run_dir: Path, weights: str = "best", device: torch.device | str = "cpu"):
    """(recipe, task, model in eval mode on `device`) of a finished run; needs no training data."""
    recipe = run_recipe(run_dir)
    task = task_classes(recipe.task)[1](recipe)
    task.recipe = _without_pretrained(recipe)  # a copy: the recipe itself stays as the run wrote it
    path = run_weights(run_dir, weights)
    state = read_state_dict(path)
    # parameters on the meta device: the random initialisation the file replaces cost 2 of the 3 s an FCN8s
    # took to load on a CPU core
    with init_empty_weights(include_buffers=False):
        model: nn.Module = task.build_model()
    load_weights(model, state, source=str(path), assign=True)
    return recipe, task, model.to(device).eval()


def _without_pretrained(recipe: Recipe) -> Recipe:
    """A copy whose model starts from random init: the run's own weights replace the pre-trained ones, so those
    are never read (or downloaded, offline) again."""
    if not hasattr(getattr(recipe, "model", None), "pretrained"):
        return recipe
    return replace(recipe, model=replace(recipe.model, pretrained=""))


def eval_data(data: DataConfig, batch_size: int = 0, num_workers: int = -1) -> DataConfig:
    """A recipe's data section for inference: `--batch-size` images per process (0 = the recipe's evaluation
    batch, else its batch) and `--workers` (-1 = the recipe's), each within the bounds of the recipe key it sets."""
    for option, value, low, key in (("--batch-size", batch_size, 0, "data.eval_batch_size"),
                                    ("--workers", num_workers, -1, "data.num_workers")):
        if not low <= value <= RANGES[key][1]:
            raise DlcvkitError(f"{option} {value}: must be between {low} and {RANGES[key][1]} (as {key})")
    return replace(data, eval_batch_size=batch_size or data.eval_batch_size or data.batch_size,
                   num_workers=data.num_workers if num_workers < 0 else num_workers)


def skip_bad_samples(dataset, folder: Path, num_workers: int, accelerator) -> None:
    """--skip-bad: leave out the samples with a file that does not decode; a note on stderr says which."""
    note = skip_unreadable(dataset, f"--data {folder} (--skip-bad)", num_workers)
    if accelerator.is_main_process:
        print(f"dlcvkit: note: {note}", file=sys.stderr)
