"""The small object a recipe plugs into the engine's loop: build the model, compute a batch's loss, evaluate."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import Dataset

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


class Task:
    """Override what the job needs; the defaults do nothing. Batches are dicts of tensors (see dlcvkit.data)."""

    best_metric: str | None = None  # validation metric whose maximum is kept as RUN_DIR/best.safetensors

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe

    def build_model(self) -> nn.Module:
        """The module the optimizer trains (its forward is what `loss` calls)."""
        raise NotImplementedError

    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def val_dataset(self) -> Dataset | None:
        return None

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
