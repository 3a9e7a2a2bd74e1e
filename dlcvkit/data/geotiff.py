"""Multispectral GeoTIFF rasters (`xxxx_sat.tif`) read with rasterio: headers, windows and per-band statistics.

A raster's pixels become float32 `c h w` tensors of its raw values (any band count; uint8, uint16, float32 or
another real dtype), normalised later by per-band mean and std (`data.band_mean`, `data.band_std`), never scaled
to 0..1: their range depends on the sensor. Reads go window by window, so a raster need not fit in memory.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from dlcvkit.data.images import read_image
from dlcvkit.errors import DlcvkitError, first_line

GEOTIFF_SUFFIXES = (".tif", ".tiff")
# Reading pixels needs no georeference; where an output needs one, `dlcvkit.runs.raster` says so in one line
# (rasterio would warn at every open, from the loader's threads too, where `catch_warnings` is not safe).
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)


class UnreadableRaster(DlcvkitError):
    """A raster that rasterio cannot open or decode (what `--skip-bad` leaves out)."""


class RasterHeader(NamedTuple):
    """What a raster's header says, nothing decoded."""

    size: tuple[int, int]  # (width, height)
    count: int  # bands
    dtype: str


def is_geotiff(path: str | os.PathLike) -> bool:
    return os.fspath(path).lower().endswith(GEOTIFF_SUFFIXES)


@contextmanager
def open_raster(path: str | os.PathLike, bands: int | None = None, what: str = "data.bands"):
    """The rasterio dataset of `path`, with one line naming the file for anything rasterio cannot read, and
    for a band count other than `bands` (None: any; `what` says where `bands` comes from)."""
    try:
        with rasterio.open(path) as src:
            if bands is not None and src.count != bands:
                raise DlcvkitError(f"{path} has {src.count} bands, but {what} is {bands}; every image of a run "
                                   "needs its band count")
            if np.dtype(src.dtypes[0]).kind not in "uif":
                raise DlcvkitError(f"{path} holds {src.dtypes[0]} pixels; use integer or float32 bands")
            yield src
    except RasterioError as e:
        raise UnreadableRaster(f"cannot read GeoTIFF {path}: {first_line(e)}; remove or replace it") from None


def raster_header(path: str | os.PathLike, bands: int | None = None, what: str = "data.bands") -> RasterHeader:
    """Size, band count and dtype of a raster (see `open_raster` for the checks)."""
    with open_raster(path, bands, what) as src:
        return RasterHeader((src.width, src.height), src.count, src.dtypes[0])


def read_window(src, window: Window | None = None) -> torch.Tensor:
    """float32 `c h w` of the open raster `src` (all of it, or `window`); a damaged block is one line naming
    the file."""
    try:
        return torch.from_numpy(src.read(window=window, out_dtype="float32"))
    except RasterioError as e:
        raise UnreadableRaster(f"cannot read GeoTIFF {src.name}: {first_line(e)}; remove or replace it") from None


def read_raster(path: str | os.PathLike, bands: int | None = None, what: str = "data.bands") -> torch.Tensor:
    """float32 `c h w` raw values of the whole raster `path`."""
    with open_raster(path, bands, what) as src:
        return read_window(src)


def read_pixels(path: str | os.PathLike) -> torch.Tensor:
    """A GeoTIFF's raw values (`read_raster`), any other image's uint8 RGB (`read_image`)."""
    return read_raster(path) if is_geotiff(path) else read_image(path)


def band_statistics(paths: list[os.PathLike], bands: int) -> tuple[list[float], list[float]]:
    """(mean, std) of every band over all pixels of the rasters `paths` (population std, as numpy's): float64
    sums of values and squares, accumulated block by block, so no raster is ever held whole."""
    total, squares, pixels = np.zeros(bands), np.zeros(bands), 0
    for path in paths:
        with open_raster(path, bands) as src:
            for _, window in src.block_windows(1):
                block = read_window(src, window).numpy().astype(np.float64).reshape(bands, -1)
                if not np.isfinite(block).all():
                    raise DlcvkitError(f"{path} holds NaN or infinite pixels (band "
                                       f"{int(np.nonzero(~np.isfinite(block).all(axis=1))[0][0]) + 1}); fill its "
                                       "no-data pixels with a number before training")
                total += block.sum(axis=1)
                squares += np.square(block).sum(axis=1)
                pixels += block.shape[1]
    mean = total / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean**2, 0.0))
    # a band constant over the whole training set (an empty no-data band) carries nothing: std 1 leaves it at 0
    # after centering, where std 0 would divide by zero
    return mean.tolist(), np.where(std > 0, std, 1.0).tolist()
