"""Optimizers from a recipe: timm's registry (adamw, sgd, lars, lamb, ...) over the task's parameter groups."""

from __future__ import annotations

import inspect

import timm.optim
import torch
from timm.optim import param_groups_weight_decay
from torch import nn

from dlcvkit.config import OptimConfig
from dlcvkit.errors import DlcvkitError


def weight_decay_groups(module: nn.Module, cfg: OptimConfig, lr_scale: float = 1.0) -> list[dict]:
    """Trainable parameters of `module` in timm's decay / no-decay groups (biases and norms get no decay
    unless `decay_bias_and_norm`; LARS then also skips their trust-ratio adaptation, as in the BYOL paper)."""
    groups = param_groups_weight_decay(
        module, cfg.weight_decay, weight_decay_exclude_1d=not cfg.decay_bias_and_norm
    )
    for group in groups:
        group["lr_scale"] = lr_scale
    return [g for g in groups if g["params"]]


def build_optimizer(cfg: OptimConfig, groups: list[dict], effective_batch: int) -> torch.optim.Optimizer:
    """The recipe's optimizer over `groups`; each group gets `base_lr` = lr (scaled) x its `lr_scale`."""
    if cfg.name not in timm.optim.list_optimizers():
        raise DlcvkitError(
            f"optim.name={cfg.name!r} is not a timm optimizer; e.g. adamw, adam, sgd, momentum, lars, lamb"
        )
    if not any(g["params"] for g in groups):
        raise DlcvkitError("the model has no trainable parameters (is everything frozen?)")
    lr = cfg.lr * (effective_batch / 256 if cfg.lr_scaling == "linear" else 1.0)
    for group in groups:
        group["base_lr"] = group["lr"] = lr * group.get("lr_scale", 1.0)
    extra = {}
    if "betas" in inspect.signature(timm.optim.get_optimizer_class(cfg.name)).parameters:
        extra["betas"] = tuple(cfg.betas)
    return timm.optim.create_optimizer_v2(
        groups, opt=cfg.name, lr=lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum, **extra
    )
