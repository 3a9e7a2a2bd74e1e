"""Pixel losses of semantic segmentation by name (the `[loss]` section of a segment recipe), built by one factory,
`build_seg_loss`: torch's cross-entropy (the course's loss, the default) and segmentation_models_pytorch's Dice,
focal and Lovász-softmax losses, for classes that are rare or imbalanced.

Every loss takes logits `b c h w` and class ids `b h w` (int64) and returns a scalar.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dlcvkit.errors import DlcvkitError

SEG_LOSSES = ("ce", "dice", "focal", "lovasz", "ce+dice")
# smp's DiceLoss and FocalLoss weight their per-class losses (a weighted mean over classes), torch's cross-entropy
# its pixels; smp's LovaszLoss has no per-class weights, so weights given with it are refused rather than dropped
WEIGHTED = ("ce", "dice", "focal", "ce+dice")


class LossSum(nn.Module):
    """The sum of several losses of the same logits and labels (`ce+dice`: each with weight 1)."""

    def __init__(self, *losses: nn.Module) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(loss(logits, target) for loss in self.losses)


def build_seg_loss(name: str, class_weights: list[float] = (), ignore_index: int | None = None,
                   num_classes: int = 7) -> nn.Module:
    """The loss `name` (one of SEG_LOSSES) as a module `loss(logits, target)`, from the recipe's `loss.name` and
    `loss.class_weights` ([] = unweighted, else one weight >= 0 per class) and `data.ignore_index` (pixels with
    that label add nothing to the loss; None = every pixel counts).

    "ce" with neither weights nor an ignored label is exactly `F.cross_entropy(logits, target)`. Weights are
    torch's `weight` for the cross-entropy (a weighted mean over pixels) and smp's `class_weights` for Dice and
    focal (a weighted mean over the per-class losses); "ce+dice" weights both parts; "lovasz" takes none.
    """
    if name not in SEG_LOSSES:
        raise DlcvkitError(f"loss.name={name!r}: use one of {', '.join(SEG_LOSSES)}")
    weights = _check_weights(name, list(class_weights), num_classes)
    if name == "ce":
        return nn.CrossEntropyLoss(weight=weights, ignore_index=-100 if ignore_index is None else ignore_index)
    # imported here: smp pulls in much that the default loss does not need
    from segmentation_models_pytorch.losses import DiceLoss, FocalLoss, LovaszLoss

    smp_weights = list(class_weights) or None
    if name == "dice":
        return DiceLoss("multiclass", ignore_index=ignore_index, class_weights=smp_weights)
    if name == "focal":
        return FocalLoss("multiclass", ignore_index=ignore_index, class_weights=smp_weights)
    if name == "lovasz":
        return LovaszLoss("multiclass", ignore_index=ignore_index)
    return LossSum(build_seg_loss("ce", class_weights, ignore_index, num_classes),
                   build_seg_loss("dice", class_weights, ignore_index, num_classes))


def _check_weights(name: str, weights: list[float], num_classes: int) -> torch.Tensor | None:
    """`weights` as a float32 tensor (None when empty), or a DlcvkitError naming loss.class_weights."""
    if not weights:
        return None
    if name not in WEIGHTED:
        raise DlcvkitError(f"loss.class_weights do not apply to loss.name={name!r} (smp's LovaszLoss takes no class "
                           f"weights); they weight {', '.join(WEIGHTED)}: drop them or choose one of those")
    if len(weights) != num_classes:
        raise DlcvkitError(f"loss.class_weights has {len(weights)} values: give one per class ({num_classes}, in "
                           f"class-id order), or [] for none")
    if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
        raise DlcvkitError(f"loss.class_weights={weights}: each must be a finite number >= 0, and one at least > 0")
    return torch.tensor(weights, dtype=torch.float32)
