"""The course's land-cover mask colours: RGB colour masks <-> class-id maps `h w`, and the mask file readers.

The course's reader thresholds each channel at 128 and reads the three bits as a code `4 R + 2 G + B`; every
code but red (4) names one class. Red is left undefined there; here it is an error unless `red_as` maps it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from dlcvkit.data.images import read_image, write_image
from dlcvkit.errors import DlcvkitError

CLASS_NAMES = ("Urban", "Agriculture", "Rangeland", "Forest", "Water", "Barren", "Unknown")
NUM_CLASSES = 7
SCORED_CLASSES = 6  # ids 0..5 enter the course's mean IoU; Unknown does not (but is not ignored either)
UNKNOWN = 6

# id -> RGB colour, in id order
PALETTE = torch.tensor(
    [
        (0, 255, 255),  # Urban: cyan
        (255, 255, 0),  # Agriculture: yellow
        (255, 0, 255),  # Rangeland: purple
        (0, 255, 0),  # Forest: green
        (0, 0, 255),  # Water: blue
        (255, 255, 255),  # Barren: white
        (0, 0, 0),  # Unknown: black
    ],
    dtype=torch.uint8,
)

_RED_CODE = 4
_NO_CLASS = 255
# colour code 4R + 2G + B -> class id, as in the course's read_masks (red has none)
_CODE_TO_CLASS = torch.tensor([6, 4, 3, 0, _NO_CLASS, 2, 1, 5], dtype=torch.uint8)


def rgb_to_classes(rgb: torch.Tensor, *, source: str | os.PathLike = "mask", red_as: int | None = None) -> torch.Tensor:
    """Class ids `h w` (uint8) of a colour mask `3 h w` (uint8), read exactly like the course's reader.

    Red pixels (code 4) raise DlcvkitError naming `source`, unless `red_as` gives the class id they become.
    """
    if rgb.ndim != 3 or rgb.shape[0] != 3:
        raise DlcvkitError(f"{source}: a colour mask must have 3 channels (3, H, W), got shape {tuple(rgb.shape)}")
    bits = (rgb >= 128).to(torch.uint8)
    code = bits[0] * 4 + bits[1] * 2 + bits[2]
    ids = _CODE_TO_CLASS[code.long()]
    red = code == _RED_CODE
    if red.any():
        if red_as is None:
            count = int(red.sum())
            first = int(red.flatten().nonzero()[0])
            row, col = divmod(first, red.shape[1])
            raise DlcvkitError(
                f"{source}: {count} red (255,0,0) pixels, a colour of no class (first at row {row}, col {col}); "
                f"pass --red-as ID (red_as=ID) to map them to a class id 0..{NUM_CLASSES - 1}"
            )
        ids[red] = _check_red_as(red_as)
    return ids


def _check_red_as(red_as: int) -> int:
    if isinstance(red_as, bool) or not isinstance(red_as, int) or not 0 <= red_as < NUM_CLASSES:
        raise DlcvkitError(f"--red-as must be a class id 0..{NUM_CLASSES - 1}, got {red_as!r}")
    return red_as


def classes_to_rgb(ids: torch.Tensor, *, source: str | os.PathLike = "mask") -> torch.Tensor:
    """Colour mask `3 h w` (uint8) of class ids `h w`, in the course's colours."""
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= NUM_CLASSES):
        raise DlcvkitError(
            f"{source}: class ids must be 0..{NUM_CLASSES - 1}, found {int(ids.min())}..{int(ids.max())}; "
            "clamp or remap the prediction before colouring it"
        )
    return PALETTE.to(ids.device)[ids.long()].permute(2, 0, 1).contiguous()


def read_mask(path: str | os.PathLike, red_as: int | None = None) -> torch.Tensor:
    """Class ids `h w` (uint8) of the colour mask file `path`."""
    return rgb_to_classes(read_image(path), source=path, red_as=red_as)


def write_mask(path: str | os.PathLike, ids: torch.Tensor) -> None:
    """Write class ids `h w` as the course's RGB colour mask (PNG, lossless), creating parent folders."""
    if os.fspath(path).lower().endswith((".jpg", ".jpeg")):
        raise DlcvkitError(f"cannot write mask {path}: JPEG would change the colours; use a .png name")
    write_image(path, classes_to_rgb(ids.cpu(), source=path))


_COLOUR_MODES = ("RGB", "RGBA", "P")  # PIL modes that decode to colours; "P" (palette) PNGs are expanded to RGB


def read_colour_mask(path: Path, red_as: int | None = None) -> torch.Tensor:
    """Class ids `h w` of a colour mask file, refusing greyscale ones (a class-index PNG read as colours would
    silently become all Unknown)."""
    try:
        with Image.open(path) as img:
            mode = img.mode
    except (UnidentifiedImageError, OSError) as e:
        raise DlcvkitError(f"cannot decode mask {path}: {e}; remove or replace it") from None
    if mode not in _COLOUR_MODES:
        raise DlcvkitError(
            f"mask {path} is a {mode} image, not an RGB colour mask; masks must use the course's colours "
            "(Urban cyan, Agriculture yellow, ...), as `dlcvkit predict seg` writes them"
        )
    return read_mask(path, red_as=red_as)
