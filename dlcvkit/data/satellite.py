"""Course P2: satellite images and their land-cover masks, `xxxx_sat.jpg` + `xxxx_mask.png` pairs in one folder."""

from __future__ import annotations

import os
from pathlib import Path

from dlcvkit.data.folders import Size, image_folder, visible
from dlcvkit.data.images import read_image, resize_image, resize_mask
from dlcvkit.data.masks import OPTION, FormatSource, check_mask_mode, read_mask
from dlcvkit.data.samples import FileDataset, Header
from dlcvkit.errors import DlcvkitError

SAT_SUFFIX = "_sat.jpg"
MASK_SUFFIX = "_mask.png"


def _check_paired(root: Path, unpaired: list[str], suffix: str, partner: str) -> None:
    if unpaired:
        stem = unpaired[0]
        more = f" (and {len(unpaired) - 1} more)" if len(unpaired) > 1 else ""
        raise DlcvkitError(f"{stem}{suffix} in {root} has no {stem}{partner}{more}; add the partner or remove it")


class SatellitePairs(FileDataset):
    """Course P2: `xxxx_sat.jpg` + `xxxx_mask.png` pairs, matched by the `xxxx` stem.

    With `with_masks=False` (inference) only the `*_sat.jpg` files are needed and samples have no "mask".
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
    ):
        self.root = image_folder(root, "satellite image folder")
        self.size = size
        self.with_masks = with_masks
        self.red_as = red_as
        self.mask_format = mask_format
        self.format_source = format_source  # where mask_format was chosen: what a refused mask's message names
        self.ignore_index = ignore_index
        entries = visible(self.root)
        sats = {name[: -len(SAT_SUFFIX)] for name in entries if name.endswith(SAT_SUFFIX)}
        masks = {name[: -len(MASK_SUFFIX)] for name in entries if name.endswith(MASK_SUFFIX)}
        if with_masks:
            _check_paired(self.root, sorted(sats - masks), SAT_SUFFIX, MASK_SUFFIX)
            _check_paired(self.root, sorted(masks - sats), MASK_SUFFIX, SAT_SUFFIX)
        if not sats:
            raise DlcvkitError(f"no xxxx{SAT_SUFFIX} (+ xxxx{MASK_SUFFIX}) files in {self.root}; is it a P2 folder?")
        self.names = sorted(sats)

    def __getitem__(self, i: int) -> dict:
        sat_path, *mask_path = self.files(i)
        image = read_image(sat_path)
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
        return [self.root / f"{stem}{SAT_SUFFIX}"] + ([self.root / f"{stem}{MASK_SUFFIX}"] if self.with_masks else [])

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
