"""Task names to their recipe and task classes, and `load_run` to rebuild a finished run's model for inference."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import torch
from torch import nn

from dlcvkit.config import Recipe, load_recipe
from dlcvkit.engine.weights import load_weights, read_state_dict
from dlcvkit.errors import DlcvkitError, did_you_mean

# task name -> (module, recipe class, task class); imported lazily so the CLI starts fast
TASKS = {
    "classify": ("dlcvkit.tasks.classify", "ClassifyRecipe", "ClassifyTask"),
    "segment": ("dlcvkit.tasks.segment", "SegmentRecipe", "SegmentTask"),
    "byol": ("dlcvkit.tasks.byol", "ByolRecipe", "ByolTask"),
    "finetune": ("dlcvkit.tasks.finetune", "FinetuneRecipe", "FinetuneTask"),
}


def task_classes(name: str) -> tuple[type, type]:
    """(recipe class, task class) of a task name."""
    if name not in TASKS:
        raise DlcvkitError(f"unknown task '{name}'{did_you_mean(name, TASKS)}; known tasks: {', '.join(sorted(TASKS))}")
    module, recipe_cls, task_cls = TASKS[name]
    mod = importlib.import_module(module)
    return getattr(mod, recipe_cls), getattr(mod, task_cls)


def run_recipe(run_dir: Path) -> Recipe:
    """The resolved recipe a run folder was trained with."""
    path = Path(run_dir) / "recipe.toml"
    if not path.is_file():
        raise DlcvkitError(f"--run {run_dir}: not a dlcvkit run folder (no recipe.toml)")
    try:
        name = tomllib.loads(path.read_text()).get("task", "")
    except tomllib.TOMLDecodeError as e:
        raise DlcvkitError(f"recipe {path} is not valid TOML: {e}") from None
    return load_recipe(path, task_classes(name)[0])


def run_weights(run_dir: Path, weights: str = "best") -> Path:
    """`best.safetensors` (if the run kept one and `weights` is "best"), else `model.safetensors`."""
    run_dir = Path(run_dir)
    if weights not in ("best", "last"):
        raise DlcvkitError(f"--weights {weights!r}: expected 'best' or 'last'")
    for name in (["best.safetensors"] if weights == "best" else []) + ["model.safetensors"]:
        if (run_dir / name).is_file():
            return run_dir / name
    raise DlcvkitError(f"--run {run_dir}: no model.safetensors yet (has the run finished or reached --max-steps?)")


def load_run(run_dir: Path, weights: str = "best", device: torch.device | str = "cpu"):
    """(recipe, task, model in eval mode on `device`) of a finished run; needs no training data."""
    recipe = run_recipe(run_dir)
    task = task_classes(recipe.task)[1](recipe)
    if hasattr(getattr(recipe, "model", None), "pretrained"):
        # The run's own weights replace the pre-trained ones: never read (or download, offline) those again.
        recipe.model.pretrained = ""
    model: nn.Module = task.build_model()
    path = run_weights(run_dir, weights)
    load_weights(model, read_state_dict(path), source=str(path))
    return recipe, task, model.to(device).eval()
