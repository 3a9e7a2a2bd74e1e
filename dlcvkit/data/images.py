"""Read, resize and write images as uint8 `c h w` tensors, with one clear error for files that cannot be decoded."""

from __future__ import annotations

import io
import os
import re
import warnings
import zlib
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
    """`read_image` of the file `path` whose bytes are `data`. PNGs are checked (`_check_png`) and decoded by
    PIL: torchvision's libpng reader dies by a segmentation fault on any libpng error, a bad CRC or zlib stream
    among them (pytorch/vision#3613), where PIL raises. JPEGs (whose reader survives damage) go to torchvision."""
    view = memoryview(data.numpy())  # the same bytes, no copy
    if view[:8] == PNG_SIGNATURE:
        return _decode_png(path, view, grey)
    size = _jpeg_size(view)
    if size is not None:
        _check_pixels(path, size)
    try:
        with _torchvision_io():
            img = decode_image(data, mode=ImageReadMode.GRAY if grey else ImageReadMode.RGB)
    except Exception as e:  # torchvision reports every decoding failure as a RuntimeError with a C++ location
        raise DlcvkitError(f"cannot decode image {path}: {_reason(e)}; remove or replace it") from e
    if img.dtype != torch.uint8:  # 16-bit PNG
        img = F.to_dtype(img, torch.uint8, scale=True)
    return img


def _bad(path: str | os.PathLike, reason: str) -> DlcvkitError:
    return DlcvkitError(f"cannot decode image {path}: {reason}; remove or replace it")


def _check_pixels(path: str | os.PathLike, hw: tuple[int, int]) -> None:
    """Refuse a header claiming more pixels than PIL opens (2 x Image.MAX_IMAGE_PIXELS, its decompression-bomb
    guard, which `image_header` applies too) before anything that large is allocated."""
    limit = Image.MAX_IMAGE_PIXELS and 2 * Image.MAX_IMAGE_PIXELS
    if limit and hw[0] * hw[1] > limit:
        raise _bad(path, f"its header claims {hw[1]}x{hw[0]} pixels, more than the {limit} that PIL opens "
                         "(PIL.Image.MAX_IMAGE_PIXELS); a damaged header or a decompression bomb")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# bits per pixel of each PNG colour type (grey, RGB, palette, grey+alpha, RGBA) per bit of depth
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# deflate's largest compression ratio (258-byte matches coded in 2 bits; zlib's FAQ says 1032:1): a file whose
# IDAT data cannot hold the pixels its header claims is damaged, refused before they are allocated
_DEFLATE_RATIO = 1032


def _check_png(path: str | os.PathLike, data: memoryview) -> int:
    """The colour type of the PNG `data` (0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA), after checking its structure: every chunk within the file with its
    CRC, IHDR first, IEND present, IDAT data enough for the claimed size. Done here because PIL does not check
    the CRCs of IDAT chunks (a damaged pixel byte would decode to wrong pixels) nor lengths before allocating."""
    pos, header, idat = 8, None, 0
    while True:
        if pos + 12 > len(data):
            raise _bad(path, f"the file ends at byte {len(data)} before its IEND chunk (truncated)")
        length = int.from_bytes(data[pos:pos + 4], "big")
        kind = bytes(data[pos + 4:pos + 8]).decode("latin-1")
        end = pos + 12 + length
        if end > len(data):
            raise _bad(path, f"{kind!r} chunk at byte {pos} runs past the end of the file (truncated or damaged)")
        if zlib.crc32(data[pos + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            raise _bad(path, f"{kind!r} chunk at byte {pos}: CRC error (a damaged byte)")
        if header is None:
            if kind != "IHDR" or length != 13:
                raise _bad(path, "no IHDR chunk at its start (a damaged PNG)")
            header = data[pos + 8:end - 4]
        idat += length if kind == "IDAT" else 0
        if kind == "IEND":
            break
        pos = end
    width, height = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big")
    depth, colour = header[8], header[9]
    if not (width and height) or colour not in _PNG_SAMPLES:
        raise _bad(path, f"its IHDR chunk claims {width}x{height} pixels of colour type {colour} (a damaged PNG)")
    _check_pixels(path, (height, width))
    if height * (width * depth * _PNG_SAMPLES[colour] // 8) > _DEFLATE_RATIO * idat:
        raise _bad(path, f"its header claims {width}x{height} pixels but its IDAT chunks hold {idat} bytes, too "
                         "few for them (a damaged header or truncated data)")
    return colour


def _decode_png(path: str | os.PathLike, data: memoryview, grey: bool) -> torch.Tensor:
    """`_decode` of a PNG, by PIL, with the pixels torchvision's decoder gives: 16-bit samples keep their high
    byte, alpha is dropped, grey and palette files are expanded to RGB; `grey` reads grey files only."""
    colour = _check_png(path, data)
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            pixels = _png_pixels(path, img, colour, grey)
    except DlcvkitError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL fails in many ways (OSError, SyntaxError, ValueError, EOFError...)
        raise _bad(path, _reason(e)) from e
    return torch.from_numpy(pixels).permute(2, 0, 1)  # h w c memory, as torchvision's


def _png_pixels(path: str | os.PathLike, img: Image.Image, colour: int, grey: bool) -> np.ndarray:
    """uint8 `h w c` (c = 1 with `grey`, else 3) of a decoded PNG image of colour type `colour`."""
    if img.mode.startswith("I"):  # 16-bit grey: its high byte, as torchvision's to_dtype
        pixels = (np.asarray(img) >> 8).astype(np.uint8)
    elif grey and colour not in (0, 4):
        # libpng's colour-to-grey conversion goes through gamma tables that PIL does not reproduce, and the one
        # caller (index masks) reads grey files only
        raise DlcvkitError(f"cannot read image {path} as grey: it is a colour PNG (mode {img.mode}); read it in "
                           "colour, or store grey values in a greyscale PNG")
    elif grey:  # PIL opens 16-bit grey+alpha as RGBA, its grey in every colour channel
        pixels = np.asarray(img.convert("L") if img.mode in ("1", "L") else img.getchannel(0))
    else:
        pixels = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 1 if grey else 3, axis=2)  # a writable copy, h w c
    return pixels if pixels.flags.writeable else pixels.copy()


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
