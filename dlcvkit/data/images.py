"""Read, resize and write images as uint8 `c h w` tensors, with one clear error for files that cannot be decoded."""

from __future__ import annotations

import io
import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, encode_jpeg, encode_png, read_file
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from dlcvkit.errors import DlcvkitError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
JPEG_QUALITY = 90

# torchvision's messages start with "function, /path/of/file.cpp:123, " (the function may be "operator()");
# the reader only needs the reason.
_CPP_PREFIX = re.compile(r"^\s*[\w.:<>~]+(\(\))?, \S+:\d+, ")


@contextmanager
def _torchvision_io():
    """torchvision >= 0.29 warns on every image-io call that TorchCodec supersedes it; once per image is noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The image decoding and encoding", category=DeprecationWarning)
        yield


def is_image_file(name: str | os.PathLike) -> bool:
    """True for a visible file name ending in one of IMAGE_SUFFIXES (any case)."""
    name = os.fspath(name)
    return not os.path.basename(name).startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def _reason(error: Exception) -> str:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    while _CPP_PREFIX.match(message):
        message = _CPP_PREFIX.sub("", message, count=1)
    return message


def read_image(path: str | os.PathLike, grey: bool = False) -> torch.Tensor:
    """Decode a JPEG or PNG file into a uint8 RGB tensor `3 h w` (grey, palette and RGBA files are converted),
    or with `grey` a `1 h w` one (an 8-bit greyscale file keeps its values: class-index masks)."""
    return _decode(path, _file_bytes(path), grey)


def _file_bytes(path: str | os.PathLike) -> torch.Tensor:
    """The bytes of an image file (uint8 `n`), read once for its header and its decoding."""
    if not os.path.isfile(path):
        raise DlcvkitError(f"cannot decode image {path}: no such file; check the path or remove it from the list")
    try:
        with _torchvision_io():
            return read_file(os.fspath(path))
    except Exception as e:  # torchvision reports every failure as a RuntimeError with a C++ location
        raise DlcvkitError(f"cannot decode image {path}: {_reason(e)}; remove or replace it") from e


def _decode(path: str | os.PathLike, data: torch.Tensor, grey: bool = False) -> torch.Tensor:
    """`read_image` of the file `path` whose bytes are `data`."""
    try:
        with _torchvision_io():
            img = decode_image(data, mode=ImageReadMode.GRAY if grey else ImageReadMode.RGB)
    except Exception as e:  # torchvision reports every decoding failure as a RuntimeError with a C++ location
        raise DlcvkitError(f"cannot decode image {path}: {_reason(e)}; remove or replace it") from e
    if img.dtype != torch.uint8:  # 16-bit PNG
        img = F.to_dtype(img, torch.uint8, scale=True)
    return img


def image_header(path: str | os.PathLike) -> tuple[tuple[int, int], str]:
    """((width, height), PIL mode) of an image file, from its header alone: nothing is decoded, so a whole data
    set can be checked before a run starts."""
    try:
        with Image.open(path) as img:
            return img.size, img.mode
    except FileNotFoundError:
        raise DlcvkitError(f"cannot decode image {path}: no such file; check the path or remove it from the list") \
            from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:  # PIL's ways of saying "not an image"
        raise DlcvkitError(f"cannot decode image {path}: {_reason(e)}; remove or replace it") from None


def _hw(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def resize_image(img: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize a uint8 image `... c h w` to `size` (int: square, or (h, w)): bilinear with antialiasing."""
    hw = _hw(size)
    if tuple(img.shape[-2:]) == hw:
        return img
    return F.resize(img, list(hw), interpolation=InterpolationMode.BILINEAR, antialias=True)


def resize_mask(mask: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize a class-id mask `h w` to `size` by nearest neighbour, so that no new ids are invented."""
    hw = _hw(size)
    if tuple(mask.shape[-2:]) == hw:
        return mask
    # NEAREST_EXACT samples at pixel centres, like the bilinear resize of the image, so mask and image stay aligned.
    return F.resize(mask[None], list(hw), interpolation=InterpolationMode.NEAREST_EXACT)[0]


# The reduced decode is asked for at least the target size plus this many pixels a side, so that the antialiased
# resize after it always shrinks and smooths the DCT scaling's own ringing: a reduction that lands exactly on the
# target differs from the full decode by up to 8 grey levels, one a pixel larger by at most 5 (see read_resized).
DRAFT_EXTRA = 1
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): the segment holding the image size
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def read_resized(path: str | os.PathLike, size: int | tuple[int, int]) -> torch.Tensor:
    """`resize_image(read_image(path), size)`, decoding less where a JPEG is much larger than `size`.

    libjpeg scales by 1/2, 1/4 or 1/8 inside the inverse DCT (PIL's `Image.draft`); the smallest scale that keeps
    the image larger than `size` by DRAFT_EXTRA pixels or more is used, then the usual antialiased resize. On smooth,
    photo-like images this stays within 0.6 grey levels on average (5 at most) of the full decode. PNGs, and JPEGs
    under twice `size` (where no scale fits), take the full decode unchanged.
    """
    hw = _hw(size)
    data = _file_bytes(path)
    img = None
    if os.fspath(path).lower().endswith((".jpg", ".jpeg")):
        view = memoryview(data.numpy())  # the same bytes, no copy
        source = _jpeg_size(view)
        if source is not None and all(s >= 2 * (t + DRAFT_EXTRA) for s, t in zip(source, hw)):
            img = _decode_reduced(view, hw)
    return resize_image(_decode(path, data) if img is None else img, hw)


def _jpeg_size(data: memoryview) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header, or None where `data` is no plain JPEG. Read here rather than
    by PIL, which parses every table first: that costs more than decoding a small JPEG in full."""
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        if data[pos + 1] in _SOF_MARKERS:
            frame = data[pos + 4:pos + 9]  # precision, height, width
            return (int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")) if len(frame) == 5 else None
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")  # the marker, then the segment with its length
    return None


def _decode_reduced(data: memoryview, hw: tuple[int, int]) -> torch.Tensor | None:
    """The JPEG `data` decoded at a reduced DCT scale as uint8 `3 h w`, or None where no reduction applies or PIL
    cannot do it (the full decode then decides, and reports a bad file in its words)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "JPEG" or img.mode not in ("RGB", "L"):  # CMYK & co: torchvision's conversion
                return None
            full = img.size
            img.draft("RGB", (hw[1] + DRAFT_EXTRA, hw[0] + DRAFT_EXTRA))
            if img.size == full:
                return None
            pixels = np.array(img.convert("RGB"))
    except Exception:  # noqa: BLE001 - PIL fails in many ways (truncated, bomb guard); the full decode reports
        return None
    return torch.from_numpy(pixels).permute(2, 0, 1)  # h w c memory suits the uint8 resize's fast path


def write_image(path: str | os.PathLike, img: torch.Tensor) -> None:
    """Write a uint8 `3 h w` image as PNG or JPEG (quality 90) by the suffix of `path`, creating parent folders."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise DlcvkitError(f"cannot write image {path}: unknown suffix {path.suffix!r}; use .png, .jpg or .jpeg")
    if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] not in (1, 3):
        raise DlcvkitError(
            f"cannot write image {path}: expected a uint8 tensor (3, H, W), got {img.dtype} {tuple(img.shape)}"
        )
    img = img.detach().cpu().contiguous()
    with _torchvision_io():
        encoded = encode_png(img) if suffix == ".png" else encode_jpeg(img, quality=JPEG_QUALITY)
    try:  # written here rather than by torchvision, whose error names neither the file nor the reason
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(encoded.numpy())
    except OSError as e:
        raise DlcvkitError(f"cannot write image {path}: {e.strerror or e}; check that its folder is writable and "
                           "has space") from e
