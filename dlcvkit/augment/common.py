"""Conversions every pipeline shares: uint8 batches from the loader to normalised float tensors."""

from __future__ import annotations

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (b c h w) in 0..255 -> float32 in [0, 1]."""
    return images.float().div_(255.0)


def normalize(images: torch.Tensor, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD) -> torch.Tensor:
    """(x − mean) / std per channel, for float images in [0, 1] (ImageNet statistics, as timm's backbones expect)."""
    mean = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    std = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean) / std
