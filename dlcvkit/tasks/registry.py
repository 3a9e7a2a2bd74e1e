"""The tasks by name: each one's module, recipe and Task classes (imported lazily, so the CLI starts fast), and
the `dlcvkit NAME` help and example of each. A new Task is one line here."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import NamedTuple

from dlcvkit.config import recorded_recipe
from dlcvkit.errors import DlcvkitError, did_you_mean


class Entry(NamedTuple):
    module: str
    recipe: str  # the recipe class
    task: str  # the Task class
    help: str  # what it trains: the help of `dlcvkit NAME`
    example: str  # the example line under that help


TASKS = {
    "classify": Entry("dlcvkit.tasks.classify", "ClassifyRecipe", "ClassifyTask",
                      "Train a classifier: any timm backbone, recipe-defined head (P1 folder, ImageFolder or CSV "
                      "data).",
                      "dlcvkit classify --recipe cls_p1_vgg16bn --data train_50 --val val_50 --out runs/vgg16bn"),
    "segment": Entry("dlcvkit.tasks.segment", "SegmentRecipe", "SegmentTask",
                     "Train a segmenter (FCN32s/16s/8s, DeepLabv3, UNet, DeepLabV3+ or FPN on a timm encoder) on "
                     "xxxx_sat.jpg + xxxx_mask.png folders.",
                     "dlcvkit segment --recipe seg_fcn8s_vgg16 --data p2/train --val p2/validation --out runs/fcn8s"),
    "byol": Entry("dlcvkit.tasks.byol", "ByolRecipe", "ByolTask",
                  "Pre-train a backbone with BYOL on a folder of unlabeled images; writes "
                  "RUN_DIR/backbone.safetensors.",
                  "dlcvkit byol --recipe byol_resnet50_mini --data mini/train --out runs/byol"),
    "dino": Entry("dlcvkit.tasks.dino", "DinoRecipe", "DinoTask",
                  "Pre-train a backbone with DINO (multi-crop self-distillation) on a folder of unlabeled images; "
                  "writes RUN_DIR/backbone.safetensors.",
                  "dlcvkit dino --recipe dino_resnet50_mini --data mini/train --out runs/dino"),
    "simclr": Entry("dlcvkit.tasks.simclr", "SimclrRecipe", "SimclrTask",
                    "Pre-train a backbone with SimCLR (NT-Xent, negatives from every process) on a folder of "
                    "unlabeled images; writes RUN_DIR/backbone.safetensors.",
                    "dlcvkit simclr --recipe simclr_resnet50_mini --data mini/train --out runs/simclr"),
    "finetune": Entry("dlcvkit.tasks.finetune", "FinetuneRecipe", "FinetuneTask",
                      "Fine-tune a classifier on Office-Home from scratch, a supervised or a BYOL backbone "
                      "(settings A–E).",
                      "dlcvkit finetune --recipe finetune_officehome --setting C "
                      "--backbone runs/byol/backbone.safetensors --data office --out runs/ft_C"),
}


def task_classes(name: str) -> tuple[type, type]:
    """(recipe class, task class) of a task name."""
    if name not in TASKS:
        raise DlcvkitError(f"unknown task '{name}'{did_you_mean(name, TASKS)}; known tasks: {', '.join(sorted(TASKS))}")
    entry = TASKS[name]
    module = importlib.import_module(entry.module)
    return getattr(module, entry.recipe), getattr(module, entry.task)


def recorded_task(run_dir: Path, option: str) -> str:
    """The task that made the run in RUN_DIR (its recipe.toml's `task`), read before the recipe is loaded: a run
    of another task must be named as such, not by the first of its keys that the expected recipe lacks."""
    return str(recorded_recipe(run_dir, option).get("task", ""))


def build_task(recipe):
    """The recipe's Task, built from a copy that its `resolve` completed with what its training data decides."""
    task_cls = task_classes(recipe.task)[1]
    return task_cls(task_cls.resolve(recipe))
