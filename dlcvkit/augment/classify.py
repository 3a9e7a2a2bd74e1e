"""Classification augmentations (kornia, per-image parameters) and mixup/cutmix (timm's, on device batches)."""

from __future__ import annotations

import kornia.augmentation as K
from timm.data import Mixup
from torch import nn


def classification_augment(preset: str, size: int) -> nn.Module:
    """`none`, `flip` (horizontal flip), `standard` (random resized crop 0.6–1, flip, mild colour jitter), or
    `affine` (small shifts, rotations and scalings, no flip: for digits and text, where a mirror image is
    another symbol)."""
    if preset == "none":
        return nn.Identity()
    if preset == "flip":
        return K.AugmentationSequential(K.RandomHorizontalFlip())
    if preset == "standard":
        return K.AugmentationSequential(
            K.RandomResizedCrop((size, size), scale=(0.6, 1.0)),
            K.RandomHorizontalFlip(),
            K.ColorJitter(0.2, 0.2, 0.2, 0.02, p=0.5),
        )
    if preset == "affine":
        return K.AugmentationSequential(K.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), p=1.0))
    raise ValueError(f"unknown classification augmentation preset {preset!r}")


def mixup_cutmix(mixup: float, cutmix: float, prob: float, switch_prob: float, label_smoothing: float,
                 num_classes: int) -> Mixup | None:
    """timm's Mixup (one λ per batch, pairs each image with the batch reversed), or None when both alphas are 0.
    Called on a float batch and its labels it returns the mixed batch and soft (smoothed) targets."""
    if mixup <= 0 and cutmix <= 0:
        return None
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, switch_prob=switch_prob, mode="batch",
                 label_smoothing=label_smoothing, num_classes=num_classes)
