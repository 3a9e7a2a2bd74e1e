"""Exponential moving averages of a network: BYOL's target network and the optional model EMA.

`ξ ← τ ξ + (1 − τ) θ` over parameters and floating-point buffers (BN running statistics), integer buffers
(`num_batches_tracked`) copied. The tensor lists are built once, so an update is one fused `_foreach_lerp_`
and one `_foreach_copy_` with no state_dict walk per step (timm's ModelEmaV3 rebuilds both dicts each call).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn


def momentum_schedule(step: int, total_steps: int, tau_base: float) -> float:
    """BYOL's τ_k = 1 − (1 − τ_base)(cos(πk/K) + 1)/2: τ_base at k = 0, rising to 1 at k = K (Grill et al. §3.2)."""
    progress = min(1.0, step / max(1, total_steps))
    return 1.0 - (1.0 - tau_base) * (math.cos(math.pi * progress) + 1.0) / 2.0


class EMA:
    """Keeps `target` an exponential moving average of `online` (modules with the same parameter names)."""

    def __init__(
        self,
        online: nn.Module,
        target: nn.Module,
        tau: float,
        total_steps: int = 0,
        buffers: Literal["average", "copy"] = "average",
    ) -> None:
        """`total_steps > 0` makes τ follow `momentum_schedule` from `tau` to 1; otherwise τ is fixed."""
        self.tau_base, self.total_steps = tau, total_steps
        online_tensors = dict(online.named_parameters()) | dict(online.named_buffers())
        target_tensors = dict(target.named_parameters()) | dict(target.named_buffers())
        if online_tensors.keys() != target_tensors.keys():
            missing = sorted(online_tensors.keys() ^ target_tensors.keys())
            raise ValueError(f"EMA target and online networks differ in tensors: {missing[:5]}")
        buffer_names = {name for name, _ in online.named_buffers()}
        self._lerp: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        self._copy: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        for name, theta in online_tensors.items():
            xi = target_tensors[name]
            averaged = xi.is_floating_point() and (name not in buffer_names or buffers == "average")
            pairs = self._lerp if averaged else self._copy
            pairs[0].append(xi)
            pairs[1].append(theta)

    def tau(self, step: int) -> float:
        """τ used by the update after optimizer step `step` (0-based)."""
        if self.total_steps > 0:
            return momentum_schedule(step, self.total_steps, self.tau_base)
        return self.tau_base

    @torch.no_grad()
    def update(self, step: int) -> None:
        """One EMA update after optimizer step `step`: ξ ← ξ + (1 − τ)(θ − ξ) = τξ + (1 − τ)θ."""
        if self._lerp[0]:
            torch._foreach_lerp_(self._lerp[0], self._lerp[1], 1.0 - self.tau(step))
        if self._copy[0]:
            torch._foreach_copy_(self._copy[0], self._copy[1])
