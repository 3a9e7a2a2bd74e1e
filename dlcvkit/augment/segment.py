"""Joint image + mask augmentation for segmentation (kornia, parameters drawn per image).

Image and mask go through one `AugmentationSequential`, so each image's mask undergoes exactly its geometric
transform; kornia resamples masks with nearest neighbour, so class ids are moved, never blended.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn


class JointAugment(nn.Module):
    """Random flips, 90-degree rotations and an optional scale-crop of images `b c h w` (float) and their class-id
    masks `b h w` (uint8)."""

    def __init__(self, flips: bool = True, rot90: bool = True, scale_min: float = 1.0, size: int = 512) -> None:
        super().__init__()
        ops: list[nn.Module] = []
        if flips:
            ops += [K.RandomHorizontalFlip(), K.RandomVerticalFlip()]
        if rot90:
            # times ~ U(-1.5, 2.5) rounded: -1, 0, 1, 2 quarter turns with equal probability (-1 = 3)
            ops.append(K.RandomRotation90(times=(-1.5, 2.5), p=1.0))
        if scale_min < 1.0:
            ops.append(K.RandomResizedCrop((size, size), scale=(scale_min, 1.0)))
        self.pipeline = K.AugmentationSequential(*ops, data_keys=["input", "mask"]) if ops else None

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pipeline is None:
            return image, mask
        image, moved = self.pipeline(image, mask[:, None].float())
        return image, moved[:, 0].to(mask.dtype)
