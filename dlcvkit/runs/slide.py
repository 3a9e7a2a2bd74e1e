"""Sliding-window segmentation of images larger than a model's tiles (`dlcvkit predict seg --tile 512 --overlap
128`), as mmsegmentation's "slide" inference: windows of `tile` pixels every `tile - overlap` pixels, the last
row and column flush with the image's edge; each pixel's class probabilities are the sum over the windows that
cover it divided by their count. The model only ever sees windows, so its memory does not grow with the image;
what does is one `C h w` sum per image (7 x 2448 x 2448 float32: 168 MB).
"""

from __future__ import annotations

import torch
from torch import nn

from dlcvkit.errors import DlcvkitError
from dlcvkit.tasks.segment import Stats, predict_masks, predict_probs


def check_tiling(tile: int, overlap: int | None) -> int:
    """The overlap to use with `--tile` (default a quarter of the tile); an error names the bad option."""
    if tile < 0:
        raise DlcvkitError(f"--tile must be a window side in pixels (0 = whole images), got {tile}")
    if tile == 0:
        if overlap is not None:
            raise DlcvkitError("--overlap goes with --tile N (sliding windows); add --tile or drop --overlap")
        return 0
    overlap = tile // 4 if overlap is None else overlap
    if not 0 <= overlap < tile:
        raise DlcvkitError(f"--overlap {overlap} must be at least 0 and smaller than --tile {tile}; "
                           f"e.g. --tile {tile} --overlap {tile // 4}")
    return overlap


def window_starts(length: int, tile: int, stride: int) -> list[int]:
    """Starts of the windows along one side (mmsegmentation's grid: the last window ends at the edge)."""
    count = max(length - tile + stride - 1, 0) // stride + 1
    return sorted({max(min(i * stride + tile, length) - tile, 0) for i in range(count)})


@torch.no_grad()
def slide_masks(model: nn.Module, images: torch.Tensor, input_size: int, tta: bool, tile: int,
                overlap: int, stats: Stats = ([], [])) -> torch.Tensor:
    """Class ids `b h w` of images `b c h w` (see `predict_probs` for `stats`): whole-image prediction when
    `tile` is 0 or each image fits in one window (then exactly `predict_masks`), else sliding windows, run
    `len(images)` windows at a time."""
    h, w = images.shape[-2:]
    if tile == 0 or (h <= tile and w <= tile):
        return predict_masks(model, images, input_size, tta, stats)
    stride = tile - overlap
    windows = [(y, x) for y in window_starts(h, tile, stride) for x in window_starts(w, tile, stride)]
    masks = []
    for image in images:
        total = count = None
        for first in range(0, len(windows), len(images)):
            chunk = windows[first:first + len(images)]
            # probabilities, not logits, are summed: a single window then equals the whole-image path (which
            # resizes probabilities and averages them over TTA views); with `tta` each window is its own TTA mean
            probs = predict_probs(model, torch.stack([image[:, y:y + tile, x:x + tile] for y, x in chunk]),
                                  input_size, tta, stats)
            if total is None:
                total = probs.new_zeros((probs.shape[1], h, w))
                count = probs.new_zeros((h, w))
            for (y, x), window in zip(chunk, probs):
                total[:, y:y + tile, x:x + tile] += window
                count[y:y + tile, x:x + tile] += 1
        masks.append((total / count).argmax(dim=0))
    return torch.stack(masks)
