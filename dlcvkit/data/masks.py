"""The course's land-cover mask colours: RGB colour masks <-> class-id maps `h w`, and the one reader of mask
files that training, evaluation and the pictures share.

The course's reader thresholds each channel at 128 and reads the three bits as a code `4 R + 2 G + B`; every
code but red (4) names one class. Red is left undefined there; here it is an error unless `red_as` maps it.
Masks that store class ids 0..6 as grey values (mask format "index") are read only when asked for: read as
colours they would silently be all Unknown.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

from dlcvkit.data.images import image_header, read_image, write_image
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

MASK_FORMATS = ("colour", "index")  # course colours (RGB, or a palette PNG read by its colours); grey class ids
_FORMAT_MODES = {"colour": ("RGB", "RGBA", "P"), "index": ("L",)}  # the PIL modes each format reads


class FormatSource(NamedTuple):
    """Where a mask format was chosen and how the user chooses another: what a message about a mask file in the
    wrong format names (the option the user passed or could pass, or the recipe key), never an option they lack."""

    origin: str  # e.g. "data.mask_format of --run runs/fcn8s"; "" = --mask-format (or its default, colour)
    switch: str  # how to choose format {format}

    def describe(self, mask_format: str) -> str:
        return self.origin or f"--mask-format {mask_format}" + (", the default" if mask_format == "colour" else "")


OPTION = FormatSource("", "--mask-format {format}")  # commands with --mask-format: eval seg, viz mask
RECIPE = FormatSource("data.mask_format of the recipe", "--set data.mask_format={format}")  # training

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
            raise DlcvkitError(
                f"{source}: {int(red.sum())} red (255,0,0) pixels, a colour of no class ({_first_pixel(red)}); "
                f"pass --red-as ID (red_as=ID) to map them to a class id 0..{NUM_CLASSES - 1}"
            )
        ids[red] = _check_red_as(red_as)
    return ids


def index_to_classes(grey: torch.Tensor, *, source: str | os.PathLike = "mask",
                     ignore_index: int | None = None) -> torch.Tensor:
    """Class ids `h w` (uint8) of a class-index mask `1 h w` (uint8) whose grey values are the ids 0..6, or
    `ignore_index` (the recipe's `data.ignore_index`, e.g. 255: pixels that no loss or metric counts)."""
    outside = grey[0] >= NUM_CLASSES
    if ignore_index is not None:
        outside &= grey[0] != ignore_index
    if outside.any():
        ignored = f" or the ignored label {ignore_index} (data.ignore_index)" if ignore_index is not None else ""
        raise DlcvkitError(
            f"{source}: {int(outside.sum())} pixels with values above the class ids 0..{NUM_CLASSES - 1}{ignored} "
            f"(up to {int(grey[0][outside].max())}, {_first_pixel(outside)}); a class-index mask holds one id per "
            "pixel: fix the file"
        )
    return grey[0]


def _first_pixel(where: torch.Tensor) -> str:
    """'first at row r, col c': the first True pixel of a bool `h w` map, to locate bad pixels in a message."""
    row, col = divmod(int(where.flatten().nonzero()[0]), where.shape[1])
    return f"first at row {row}, col {col}"


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


def check_mask_mode(path: str | os.PathLike, mode: str, mask_format: str = "colour",
                    source: FormatSource = OPTION) -> None:
    """Refuse a mask file whose PIL `mode` (from its header) is not one that `mask_format` (chosen as `source`
    says) reads."""
    if mask_format not in MASK_FORMATS:
        raise DlcvkitError(f"mask format {mask_format!r} (--mask-format, data.mask_format): use 'colour' or 'index'")
    if mode in _FORMAT_MODES[mask_format]:
        return
    chosen = f"the mask format is '{mask_format}' ({source.describe(mask_format)})"
    if mask_format == "colour" and mode in _FORMAT_MODES["index"]:
        raise DlcvkitError(
            f"mask {path} is a {mode} image, not an RGB colour mask, and {chosen}; if it holds class ids "
            f"0..{NUM_CLASSES - 1} as grey values, pass {source.switch.format(format='index')}, else write it in the "
            "course's colours"
        )
    if mask_format == "index" and mode in _FORMAT_MODES["colour"]:
        raise DlcvkitError(
            f"mask {path} is a {mode} colour mask, but {chosen}: grey class ids 0..{NUM_CLASSES - 1}; for colour "
            f"masks pass {source.switch.format(format='colour')}"
        )
    raise DlcvkitError(
        f"mask {path} is a {mode} image; masks are RGB colour masks in the course's colours, or with "
        f"{source.switch.format(format='index')} 8-bit greyscale class ids 0..{NUM_CLASSES - 1}"
    )


def read_mask(path: str | os.PathLike, red_as: int | None = None, mask_format: str = "colour",
              source: FormatSource = OPTION, ignore_index: int | None = None) -> torch.Tensor:
    """Class ids `h w` (uint8) of the mask file `path`: a colour mask (RGB, or a palette PNG read by its
    colours) or with `mask_format="index"` an 8-bit greyscale file of class ids (and of `ignore_index`, if
    given); any other file is an error (naming the format as `source` chose it)."""
    check_mask_mode(path, image_header(path)[1], mask_format, source)
    if mask_format == "index":
        return index_to_classes(read_image(path, grey=True), source=path, ignore_index=ignore_index)
    return rgb_to_classes(read_image(path), source=path, red_as=red_as)


def write_mask(path: str | os.PathLike, ids: torch.Tensor) -> None:
    """Write class ids `h w` as the course's RGB colour mask (PNG, lossless), creating parent folders."""
    if os.fspath(path).lower().endswith((".jpg", ".jpeg")):
        raise DlcvkitError(f"cannot write mask {path}: JPEG would change the colours; use a .png name")
    write_image(path, classes_to_rgb(ids.cpu(), source=path))
