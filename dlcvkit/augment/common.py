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
    # Under torch.compile / torch.onnx.export the constants are traced tensors: never cache those.
    make = _make_constants if torch.compiler.is_compiling() else _channel_constants
    mean, std = make(tuple(mean), tuple(std), images.device, images.dtype)
    return (images - mean) / std


def _make_constants(mean: tuple, std: tuple, device: torch.device, dtype: torch.dtype) -> tuple:
    """`mean` and `std` as (1 c 1 1) tensors on `device`."""
    with torch.inference_mode(False):  # also usable by training when first made under inference mode
        return tuple(torch.tensor(v, device=device, dtype=dtype).view(1, -1, 1, 1) for v in (mean, std))


# Made once per device and dtype: a tensor built from Python numbers on a GPU is a blocking host-to-device copy,
# which waits for all queued GPU work, and must not happen every step.
_channel_constants = functools.lru_cache(maxsize=32)(_make_constants)
