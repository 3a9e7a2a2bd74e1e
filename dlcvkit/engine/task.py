"""The Task contract: the small object a recipe plugs into the engine's loop. A new Task is one module (its recipe
dataclass and Task class), one shipped recipe (dlcvkit/recipes/NAME.toml) and one line in
`dlcvkit.tasks.registry.TASKS` (which also holds its `--help` text and example, so that the CLI starts without
importing torch). Every hook is declared here; override what the job needs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import Dataset, default_collate

from dlcvkit.config import Recipe
from dlcvkit.engine.ema import EMA
from dlcvkit.engine.optim import weight_decay_groups


@dataclass
class RunContext:
    """What a task may need from the running engine."""

    accelerator: Accelerator
    run_dir: Path
    step: int  # optimizer steps done
    epoch: int  # epochs done
    total_steps: int  # length of the recipe's schedule
    steps_per_epoch: int


class Task:
    """Override what the job needs; the defaults do nothing. Batches are dicts of tensors (see dlcvkit.data)."""

    best_metric: str | None = None  # validation metric whose maximum is kept as RUN_DIR/best.safetensors
    run_files: tuple[str, ...] = ()  # what the Task writes into RUN_DIR besides the engine (a restart removes them)
    # the running engine's context, set by `fit` before the first step: `loss` reads `context.step` where a
    # schedule of the method depends on it (DINO's teacher temperature)
    context: RunContext | None = None

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self._train: Dataset | None = None

    @classmethod
    def open_train(cls, recipe: Recipe) -> Dataset:
        """The training set of `recipe`, opened without building the Task (what `resolve` reads)."""
        raise NotImplementedError

    @classmethod
    def resolve(cls, recipe: Recipe) -> Recipe:
        """The recipe completed with what its training data decides, as a copy (default: the recipe as it is)."""
        return recipe

    def build_model(self) -> nn.Module:
        """The module the optimizer trains (its forward is what `loss` calls)."""
        raise NotImplementedError

    def train_dataset(self) -> Dataset:
        """The training set: `open_train`'s, opened once."""
        if self._train is None:
            self._train = self.open_train(self.recipe)
        return self._train

    def val_dataset(self) -> Dataset | None:
        """The validation set, or None (then `evaluate` is never called)."""
        return None

    @staticmethod
    def collate(samples: list[dict]) -> dict:
        """One batch of a list of samples, in the DataLoader's workers (default: torch's `default_collate`)."""
        return default_collate(samples)

    def augment(self, batch: dict) -> dict:
        """Augment a batch already on the device (no gradient)."""
        return batch

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        """The scalar loss of a batch; call `model(...)` (the prepared, possibly DDP-wrapped module)."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[dict], ctx: RunContext) -> dict[str, float]:
        """Metrics over this process's evaluation batches, reduced across processes (identical on every rank)."""
        return {}

    def param_groups(self, model: nn.Module) -> list[dict]:
        """Optimizer parameter groups (may carry an `lr_scale`); default: all trainable parameters."""
        return weight_decay_groups(model, self.recipe.optim)

    def emas(self, model: nn.Module, total_steps: int) -> list[EMA]:
        """EMAs the engine updates after every optimizer step (e.g. BYOL's target network)."""
        return []

    def after_epoch(self, model: nn.Module, ctx: RunContext) -> None:
        """Called on every process after each epoch's evaluation (e.g. save tracked predictions)."""

    def start(self, run_dir: Path) -> None:
        """Write the task's own files about a new run's inputs into RUN_DIR, beside recipe.toml (main process)."""

    def export(self, model: nn.Module, ctx: RunContext) -> None:
        """Write the task's extra outputs at the end of the run (e.g. backbone.safetensors), main process."""
