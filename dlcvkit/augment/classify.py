"""Classification augmentations (kornia, per-image parameters)."""

from __future__ import annotations

import kornia.augmentation as K
from torch import nn


def classification_augment(preset: str, size: int) -> nn.Module:
    """`none`, `flip` (horizontal flip), or `standard` (random resized crop 0.6–1, flip, mild colour jitter)."""
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
    raise ValueError(f"unknown classification augmentation preset {preset!r}")
