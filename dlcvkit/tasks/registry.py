"""Task names to their recipe and task classes."""

from __future__ import annotations

import importlib

from dlcvkit.errors import DlcvkitError

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
        raise DlcvkitError(f"unknown task '{name}'; known tasks: {', '.join(sorted(TASKS))}")
    module, recipe_cls, task_cls = TASKS[name]
    mod = importlib.import_module(module)
    return getattr(mod, recipe_cls), getattr(mod, task_cls)
