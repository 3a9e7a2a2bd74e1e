"""Course P2: satellite images and their land-cover masks, `xxxx_sat.jpg` + `xxxx_mask.png` pairs in one folder,
or multispectral GeoTIFFs `xxxx_sat.tif` + `xxxx_mask.png` (`dlcvkit.data.geotiff`)."""

from __future__ import annotations

import os
from pathlib import Path

from dlcvkit.data.folders import Size, image_folder, visible
from dlcvkit.data.geotiff import raster_header, read_raster
from dlcvkit.data.images import image_header, read_image, resize_image, resize_mask
from dlcvkit.data.masks import OPTION, FormatSource, check_mask_mode, read_mask
from dlcvkit.data.samples import FileDataset, Header
from dlcvkit.errors import DlcvkitError

SAT_SUFFIX = "_sat.jpg"
GEOTIFF_SAT_SUFFIX = "_sat.tif"
MASK_SUFFIX = "_mask.png"


def _check_paired(root: Path, unpaired: list[str], suffix: str, partner: str) -> None:
    if unpaired:
        stem = unpaired[0]
        more = f" (and {len(unpaired) - 1} more)" if len(unpaired) > 1 else ""
        raise DlcvkitError(f"{stem}{suffix} in {root} has no {stem}{partner}{more}; add the partner or remove it")


class SatellitePairs(FileDataset):
    """Course P2: `xxxx_sat.jpg` + `xxxx_mask.png` pairs, matched by the `xxxx` stem; or `xxxx_sat.tif` GeoTIFFs
    (one kind per folder) whose images are float32 raw values `c h w` with `bands` bands each (None: any).

    With `with_masks=False` (inference) only the `*_sat.*` files are needed and samples have no "mask".
    Masks are read by `dlcvkit.data.masks.read_mask` in `mask_format` ("colour" or "index"; index masks may also
    hold the label `ignore_index`, e.g. 255).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: Size = None,
        with_masks: bool = True,
        red_as: int | None = None,
        mask_format: str = "colour",
        format_source: FormatSource = OPTION,
        ignore_index: int | None = None,
        bands: int | None = None,
        bands_source: str = "data.bands",
    ):
        self.root = image_folder(root, "satellite image folder")
        self.size = size
        self.with_masks = with_masks
        self.red_as = red_as
        self.mask_format = mask_format
        self.format_source = format_source  # where mask_format was chosen: what a refused mask's message names
        self.ignore_index = ignore_index
        self.bands = bands
        self.bands_source = bands_source  # what a message about a raster's band count names
        entries = visible(self.root)
        sats = {name[: -len(SAT_SUFFIX)] for name in entries if name.endswith(SAT_SUFFIX)}
        rasters = {name[: -len(GEOTIFF_SAT_SUFFIX)] for name in entries if name.endswith(GEOTIFF_SAT_SUFFIX)}
        if sats and rasters:  # one scale of values per run: 0..255 RGB or a sensor's raw bands
            raise DlcvkitError(f"{self.root} holds both xxxx{SAT_SUFFIX} and xxxx{GEOTIFF_SAT_SUFFIX} images; keep "
                               "one kind per folder")
        self.sat_suffix = GEOTIFF_SAT_SUFFIX if rasters else SAT_SUFFIX
        sats = sats or rasters
        masks = {name[: -len(MASK_SUFFIX)] for name in entries if name.endswith(MASK_SUFFIX)}
        if with_masks:
            _check_paired(self.root, sorted(sats - masks), self.sat_suffix, MASK_SUFFIX)
            _check_paired(self.root, sorted(masks - sats), MASK_SUFFIX, self.sat_suffix)
        if not sats:
            raise DlcvkitError(f"no xxxx{SAT_SUFFIX} (+ xxxx{MASK_SUFFIX}) files in {self.root}; is it a P2 folder?")
        if not rasters and bands not in (None, 3):
            raise DlcvkitError(f"{self.root} holds RGB xxxx{SAT_SUFFIX} images (3 bands), but {bands_source} is "
                               f"{bands}; give xxxx{GEOTIFF_SAT_SUFFIX} rasters of {bands} bands")
        self.names = sorted(sats)

    def __getitem__(self, i: int) -> dict:
        sat_path, *mask_path = self.files(i)
        image = self._read(sat_path)
        sample = {"name": self.names[i]}
        if mask_path:
            mask = read_mask(mask_path[0], red_as=self.red_as, mask_format=self.mask_format,
                             source=self.format_source, ignore_index=self.ignore_index)
            _check_pair_size(sat_path, (image.shape[2], image.shape[1]), mask_path[0], (mask.shape[1], mask.shape[0]))
            sample["mask"] = mask if self.size is None else resize_mask(mask, self.size)
        sample["image"] = image if self.size is None else resize_image(image, self.size)
        return sample

    def files(self, i: int) -> list[Path]:
        stem = self.names[i]
        sat = self.root / f"{stem}{self.sat_suffix}"
        return [sat] + ([self.root / f"{stem}{MASK_SUFFIX}"] if self.with_masks else [])

    @property
    def geotiff(self) -> bool:
        return self.sat_suffix == GEOTIFF_SAT_SUFFIX

    def _read(self, path: Path):
        return read_raster(path, self.bands, self.bands_source) if self.geotiff else read_image(path)

    def sample_headers(self, i: int) -> list[Header]:
        """As FileDataset's; a GeoTIFF's "mode" is its band count and dtype (e.g. "4 bands uint16"), its band
        count checked against `bands`."""
        if not self.geotiff:
            return super().sample_headers(i)
        sat, *mask = self.files(i)
        size, count, dtype = raster_header(sat, self.bands, self.bands_source)
        return [(size, f"{count} bands {dtype}")] + [image_header(path) for path in mask]

    def check_headers(self, headers: list[list[Header]]) -> None:
        """Every mask has its image's size and a mode that `mask_format` reads."""
        if not self.with_masks:
            return
        for i, ((sat_size, _), (mask_size, mode)) in enumerate(headers):
            sat_path, mask_path = self.files(i)
            check_mask_mode(mask_path, mode, self.mask_format, self.format_source)
            _check_pair_size(sat_path, sat_size, mask_path, mask_size)


def _check_pair_size(sat_path: Path, sat_size, mask_path: Path, mask_size) -> None:
    """Image and mask of a pair must have one size (width, height)."""
    if tuple(sat_size) != tuple(mask_size):
        raise DlcvkitError(
            f"{sat_path.name} is {sat_size[0]}x{sat_size[1]} but {mask_path.name} is {mask_size[0]}x{mask_size[1]} "
            f"(width x height) in {sat_path.parent}; they must match"
        )
