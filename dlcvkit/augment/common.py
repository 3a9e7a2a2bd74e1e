"""Conversions every pipeline shares: uint8 batches from the loader to normalised float tensors."""

from __future__ import annotations

import functools

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 (b c h w) in 0..255 -> float32 in [0, 1]."""
    return images.float().div_(255.0)


def normalize(images: torch.Tensor, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD) -> torch.Tensor:
    """(x − mean) / std per channel, for float images in [0, 1] (ImageNet statistics, as timm's backbones expect)."""
    mean, std = _channel_constants(tuple(mean), tuple(std), images.device, images.dtype)
    return (images - mean) / std


@functools.lru_cache(maxsize=32)
def _channel_constants(mean: tuple, std: tuple, device: torch.device, dtype: torch.dtype) -> tuple:
    """`mean` and `std` as (1 c 1 1) tensors on `device`, made once: a tensor built from Python numbers on a GPU
    is a blocking host-to-device copy, which waits for all queued GPU work, and must not happen every step."""
    with torch.inference_mode(False):  # also usable by training when first made under inference mode
        return tuple(torch.tensor(v, device=device, dtype=dtype).view(1, -1, 1, 1) for v in (mean, std))
