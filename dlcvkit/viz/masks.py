"""Segmentation pictures: a colour overlay with class boundaries (the course's mask viewer) and the grid of
tracked predictions (image, ground truth, predictions at the early, middle and final epochs)."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from dlcvkit.data.masks import CLASS_NAMES, PALETTE, classes_to_rgb


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
            ax.imshow(picture.permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
    handles = [Patch(facecolor=(PALETTE[i] / 255).tolist(), edgecolor="grey", label=name)
               for i, name in enumerate(CLASS_NAMES)]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(CLASS_NAMES), fontsize=8, frameon=False)
    fig.savefig(path, dpi=100)
