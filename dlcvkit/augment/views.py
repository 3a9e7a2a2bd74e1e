"""The views of self-supervised methods (kornia, on the device, random parameters drawn per image): the paper
pipelines that BYOL (Grill et al. 2020, Table 6), DINO and SimCLR build their views from, and `Views`, which draws a
method's list of views from a batch. Which views a method takes is declared in its module (dlcvkit.tasks.byol, ...).
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from torch import nn


def blur_kernel(size: int) -> int:
    """Odd Gaussian-blur kernel of about 10% of the image side (paper: 23 px at 224; 13 at 128)."""
    return 2 * round(0.05 * size) + 1


PAPER_JITTER = (0.4, 0.4, 0.2, 0.1)  # Table 6: brightness, contrast, saturation, hue
GREY_JITTER = (0.4, 0.4, 0.0, 0.0)  # grey images have no saturation or hue to change


def paper_view(size: int, blur_p: float, solarize_p: float, grayscale_p: float = 0.2,
               jitter: tuple[float, ...] = PAPER_JITTER, scale: tuple[float, float] = (0.08, 1.0)
               ) -> K.AugmentationSequential:
    """One of BYOL's views (Table 6; its two views differ only in the blur and solarize probabilities), and the
    crops of other methods with their own crop `scale` range, jitter strengths and probabilities."""
    return K.AugmentationSequential(
        K.RandomResizedCrop((size, size), scale=scale),
        K.RandomHorizontalFlip(),
        K.ColorJitter(*jitter, p=0.8),
        K.RandomGrayscale(p=grayscale_p),
        K.RandomGaussianBlur(blur_kernel(size), sigma=(0.1, 2.0), p=blur_p),
        K.RandomSolarize(thresholds=0.0, additions=0.0, p=solarize_p),  # threshold exactly 0.5, nothing added
    )


class Pad(nn.Module):
    """Zero padding on every side (torchvision's `Pad`, which kornia has no batched augmentation for)."""

    def __init__(self, pixels: int) -> None:
        super().__init__()
        self.pixels = pixels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.pad(images, (self.pixels,) * 4)


def report_view(size: int) -> nn.Sequential:
    """The reference report's view: jitter 0.8/0.8/0.8/0.2 at p 0.3, grayscale 0.2, flip, 3x3 blur σ 1–2 at
    p 0.2, then pad 20 (at 128 px; scaled with the image side) and a random resized crop back to `size`."""
    return nn.Sequential(
        K.AugmentationSequential(
            K.ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.3),
            K.RandomGrayscale(p=0.2),
            K.RandomHorizontalFlip(),
            K.RandomGaussianBlur(3, sigma=(1.0, 2.0), p=0.2),
        ),
        Pad(round(20 * size / 128)),
        K.AugmentationSequential(K.RandomResizedCrop((size, size))),
    )


# On the CPU the views are made this many pixels (64 images of 128 px) at a time: the float32 intermediates of
# such a chunk (12 MB) stay in the caches, those of 256 images do not (1.9x the time per image, measured).
CPU_CHUNK_PIXELS = 64 * 128 * 128


class Views(nn.Module):
    """Float images `b c h w` in [0, 1] -> a method's views: `count` views from each pipeline, in the declared
    order, each drawn independently for every image. The `count` views of one pipeline (DINO's local crops) come
    from one batched call on the images repeated `count` times. On the CPU the batch goes chunk by chunk: every image
    still draws its own parameters, only the order of the draws follows the chunks."""

    def __init__(self, *pipelines: tuple[int, nn.Module]) -> None:
        super().__init__()
        self.counts = [count for count, _ in pipelines]
        self.pipelines = nn.ModuleList(pipeline for _, pipeline in pipelines)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        chunk = max(1, CPU_CHUNK_PIXELS // (images.shape[-2] * images.shape[-1]))
        if images.device.type != "cpu" or len(images) <= chunk:
            return self._draw(images)
        return [torch.cat(parts) for parts in zip(*(self._draw(part) for part in images.split(chunk)))]

    def _draw(self, images: torch.Tensor) -> list[torch.Tensor]:
        views = []
        for count, pipeline in zip(self.counts, self.pipelines):
            views += pipeline(images.repeat(count, 1, 1, 1)).chunk(count) if count > 1 else [pipeline(images)]
        return views


def compile_colour_jitter(views: nn.Module) -> nn.Module:
    """Compile the colour jitter of `views` with kornia's own `ColorJitter.compile`: torch.compile fuses its
    RGB -> HSV -> RGB arithmetic (on the CPU 3/4 of the views' time, and 9x faster fused), while the random
    parameters are still drawn eagerly per image, as before. The other steps gain little or lose (the blur)."""
    for module in views.modules():
        if isinstance(module, K.ColorJitter):
            module.compile(dynamic=True)  # p < 1: the share of the batch it applies to changes every step
    return views
