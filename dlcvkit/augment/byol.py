"""BYOL's two views of each image (kornia, on the device, random parameters drawn per image).

Presets: `paper` (Grill et al. 2020, Table 6: two asymmetric views), `paper_gray` (the same, every view
grayscale: for data whose colours are random per image, such as `dlcvkit data synth`, where the colour palette
alone tells the images apart and BYOL learns it instead of shapes), `grey` (for grey images such as Fashion-MNIST:
the paper's views with brightness and contrast jitter only, crops of at least 20%), `report` (the lighter pipeline of the
course's reference report, after lucidrains' byol-pytorch defaults), `none` (both views = the image; for checks
that need no randomness, such as 1 vs N processes).
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
               jitter: tuple[float, ...] = PAPER_JITTER, min_scale: float = 0.08) -> K.AugmentationSequential:
    """One of the paper's views (Table 6); the two views differ only in the blur and solarize probabilities."""
    return K.AugmentationSequential(
        K.RandomResizedCrop((size, size), scale=(min_scale, 1.0)),
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


class TwoViews(nn.Module):
    """Float images `b c h w` in [0, 1] -> (view 1, view 2), each drawn independently for every image (on the CPU,
    chunk by chunk: every image still draws its own parameters, only the order of the draws follows the chunks)."""

    def __init__(self, view1: nn.Module, view2: nn.Module) -> None:
        super().__init__()
        self.view1, self.view2 = view1, view2

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = max(1, CPU_CHUNK_PIXELS // (images.shape[-2] * images.shape[-1]))
        if images.device.type != "cpu" or len(images) <= chunk:
            return self.view1(images), self.view2(images)
        views = [(self.view1(part), self.view2(part)) for part in images.split(chunk)]
        return torch.cat([v1 for v1, _ in views]), torch.cat([v2 for _, v2 in views])


def byol_views(preset: str, size: int, compile: bool = False) -> TwoViews:
    """The two-view pipeline of a preset (`paper`, `paper_gray`, `grey`, `report` or `none`) producing `size` x
    `size` views; `compile`: see `compile_colour_jitter`."""
    if preset in ("paper", "paper_gray"):
        gray = 1.0 if preset == "paper_gray" else 0.2
        views = TwoViews(paper_view(size, blur_p=1.0, solarize_p=0.0, grayscale_p=gray),
                         paper_view(size, blur_p=0.1, solarize_p=0.2, grayscale_p=gray))
    elif preset == "grey":
        # grey images (Fashion-MNIST) fill most of their small frame: crops of at least 20% keep an object
        # recognisable at 28-32 px, where 8% of the area is a few pixels across
        views = TwoViews(paper_view(size, 1.0, 0.0, 0.0, GREY_JITTER, min_scale=0.2),
                         paper_view(size, 0.1, 0.2, 0.0, GREY_JITTER, min_scale=0.2))
    elif preset == "report":
        views = TwoViews(report_view(size), report_view(size))
    elif preset == "none":
        views = TwoViews(nn.Identity(), nn.Identity())
    else:
        raise ValueError(f"unknown BYOL augmentation preset {preset!r}")
    return compile_colour_jitter(views) if compile else views


def compile_colour_jitter(views: nn.Module) -> nn.Module:
    """Compile the colour jitter of `views` with kornia's own `ColorJitter.compile`: torch.compile fuses its
    RGB -> HSV -> RGB arithmetic (on the CPU 3/4 of the views' time, and 9x faster fused), while the random
    parameters are still drawn eagerly per image, as before. The other steps gain little or lose (the blur)."""
    for module in views.modules():
        if isinstance(module, K.ColorJitter):
            module.compile(dynamic=True)  # p < 1: the share of the batch it applies to changes every step
    return views
