"""Segmentation pictures: a colour overlay with class boundaries (the course's mask viewer, `dlcvkit viz mask`) and
the grid of tracked predictions (image, ground truth, predictions at the early, middle and final epochs)."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from einops import rearrange

from dlcvkit.data.images import read_image, write_image
from dlcvkit.data.masks import CLASS_NAMES, PALETTE, classes_to_rgb, read_mask
from dlcvkit.errors import DlcvkitError


def class_boundaries(ids: torch.Tensor, width: int = 1) -> torch.Tensor:
    """Bool `h w`: pixels within `width` pixels of a pixel of another class, on both sides of every boundary
    (what the course's viewer draws with skimage's `find_boundaries(mode="inner")` per class)."""
    # a window's max and min of the class ids differ exactly where two classes meet: two max-pools, no loop
    x = ids.float()[None, None]
    k = 2 * width + 1
    high = F.max_pool2d(x, k, stride=1, padding=width)
    low = -F.max_pool2d(-x, k, stride=1, padding=width)
    return (high != low)[0, 0]


def overlay(image: torch.Tensor, ids: torch.Tensor, alpha: float = 0.4, width: int = 1) -> torch.Tensor:
    """uint8 `3 h w`: the image tinted with each pixel's class colour (opacity `alpha`) and class boundaries
    drawn in full colour."""
    colours = classes_to_rgb(ids).float()
    tinted = image.float() * (1 - alpha) + colours * alpha
    edge = class_boundaries(ids, width)
    tinted[:, edge] = colours[:, edge]
    return tinted.round().clamp(0, 255).to(torch.uint8)


def write_overlay(image: str | os.PathLike, mask: str | os.PathLike, out: str | os.PathLike, alpha: float = 0.4,
                  width: int = 1, red_as: int | None = None, mask_format: str = "colour") -> None:
    """Write `overlay` of an image file and its mask file (ground truth or prediction, in `mask_format`) to
    `out`."""
    if not 0 <= alpha <= 1:
        raise DlcvkitError(f"--alpha {alpha}: use a value in [0, 1]")
    if width < 0:
        raise DlcvkitError(f"--width {width}: use 0 or more pixels")
    picture = read_image(image)
    ids = read_mask(mask, red_as, mask_format)
    if tuple(ids.shape) != tuple(picture.shape[1:]):
        raise DlcvkitError(
            f"{image} is {picture.shape[2]}x{picture.shape[1]} but {mask} is {ids.shape[1]}x{ids.shape[0]}; "
            "they must match"
        )
    write_image(out, overlay(picture, ids, alpha, width))


def prediction_grid(path: str | os.PathLike, rows: list[tuple[str, torch.Tensor, torch.Tensor]],
                    predictions: list[tuple[str, list[torch.Tensor]]]) -> None:
    """Write a PNG grid: one row per (name, image `3 h w`, ground-truth ids `h w`), then one column per
    (title, [predicted ids per row]) with a legend of the class colours."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
    from matplotlib.patches import Patch

    columns = 2 + len(predictions)
    fig = Figure(figsize=(2.2 * columns, 2.2 * len(rows) + 0.6), layout="constrained")
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, (name, image, truth) in enumerate(rows):
        pictures = [(name, image), ("ground truth", classes_to_rgb(truth))]
        pictures += [(title, classes_to_rgb(masks[r])) for title, masks in predictions]
        for ax, (title, picture) in zip(axes[r], pictures):
            ax.imshow(rearrange(picture, "c h w -> h w c").cpu().numpy(), interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
    handles = [Patch(facecolor=(PALETTE[i] / 255).tolist(), edgecolor="grey", label=name)
               for i, name in enumerate(CLASS_NAMES)]
    # as many legend entries per row as the grid is wide, so that a narrow grid does not cut the last ones off
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(CLASS_NAMES), columns + 1), fontsize=8,
               frameon=False)
    fig.savefig(path, dpi=100)
