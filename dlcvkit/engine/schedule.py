"""Learning-rate schedule as a pure function of the optimizer step, so a resumed run needs no scheduler state."""

from __future__ import annotations

import math

import torch


def lr_factor(
    step: int,
    total_steps: int,
    warmup_steps: int = 0,
    decay: str = "cosine",
    min_ratio: float = 0.0,
    power: float = 1.0,
) -> float:
    """Multiplier of the base LR for optimizer step `step` (0-based).

    Linear warm-up over `warmup_steps` ((step + 1) / warmup, so the first step is not wasted at LR 0), then
    `cosine`, `poly` or `constant` decay from 1 down to the floor `min_ratio` at `total_steps`.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif decay == "poly":
        shape = (1.0 - progress) ** power
    else:
        raise ValueError(f"unknown decay {decay!r}")
    return min_ratio + (1.0 - min_ratio) * shape


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every param group's LR to its `base_lr` times `factor`."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
