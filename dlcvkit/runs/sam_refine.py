"""Segment Anything on satellite images: the automatic mask generator's regions per image (a colour overlay and
a compact `.npz`), and their refinement of a trained dlcvkit segmenter: each SAM region is painted with the
class the segmenter predicts for most of its pixels, so class maps get SAM's sharp region boundaries.

Overlapping regions are painted largest first, so a smaller region lies over the larger ones it overlaps (it
is the more specific one); each region's vote counts the segmenter's classes over the whole region, whatever
is painted over it. Pixels no region covers keep the segmenter's class.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dlcvkit.data.masks import NUM_CLASSES, write_mask
from dlcvkit.engine.distributed import pick_device
from dlcvkit.errors import DlcvkitError

REGIONS_SUFFIX = "_regions.npz"  # OUT/NAME_regions.npz: the masks, see write_regions
OVERLAY_SUFFIX = "_regions.png"  # OUT/NAME_regions.png: the image with every region in its own colour
SEGMENTER_DIR = "segmenter"  # OUT/segmenter/NAME_mask.png: the segmenter alone (course colours)
REFINED_DIR = "refined"  # OUT/refined/NAME_mask.png: the segmenter + SAM regions (course colours)


@dataclass
class Regions:
    """SAM's regions of one image, sorted by area, largest first (the painting order)."""

    masks: torch.Tensor  # bool `n h w`
    predicted_iou: torch.Tensor  # float `n`: SAM's own estimate of each mask's quality
    stability_score: torch.Tensor  # float `n`: IoU of the mask thresholded at logit +1 and -1
    point_coords: torch.Tensor  # float `n 2`: the (x, y) point prompt that produced each mask


def make_generator(sam: nn.Module, points_per_side: int, pred_iou_thresh: float, stability_score_thresh: float):
    """segment-anything's `SamAutomaticMaskGenerator`: a grid of point prompts, masks filtered by quality and
    de-duplicated by box NMS."""
    from segment_anything import SamAutomaticMaskGenerator

    if points_per_side < 1:
        raise DlcvkitError(f"--points-per-side {points_per_side}: use 1 or more (SAM's default is 32)")
    for option, value in (("--pred-iou-thresh", pred_iou_thresh), ("--stability-score-thresh", stability_score_thresh)):
        if not 0 <= value <= 1:
            raise DlcvkitError(f"{option} {value}: use a value in [0, 1]")
    return SamAutomaticMaskGenerator(sam, points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
                                     stability_score_thresh=stability_score_thresh)


def generate_regions(generator, image: torch.Tensor) -> Regions:
    """The regions the generator finds in a uint8 image `3 h w` (empty masks dropped)."""
    records = generator.generate(image.permute(1, 2, 0).cpu().numpy())
    records = sorted((r for r in records if r["area"] > 0), key=lambda r: r["area"], reverse=True)
    if not records:
        return Regions(torch.zeros((0, *image.shape[1:]), dtype=torch.bool), torch.zeros(0), torch.zeros(0),
                       torch.zeros((0, 2)))
    return Regions(
        masks=torch.from_numpy(np.stack([r["segmentation"] for r in records])),
        predicted_iou=torch.tensor([r["predicted_iou"] for r in records]),
        stability_score=torch.tensor([r["stability_score"] for r in records]),
        point_coords=torch.tensor([r["point_coords"][0] for r in records]),
    )


def write_regions(path: Path, regions: Regions) -> None:
    """A compressed `.npz`: `masks` `n h w` as bits (`np.packbits` along the rows; unpack `width` of them per
    row), the scores and the point prompts."""
    masks = regions.masks.numpy()
    np.savez_compressed(path, masks=np.packbits(masks, axis=-1), width=masks.shape[2],
                        predicted_iou=regions.predicted_iou.numpy(), stability_score=regions.stability_score.numpy(),
                        point_coords=regions.point_coords.numpy())


def read_regions(path: Path) -> Regions:
    """The regions of a `NAME_regions.npz` that `dlcvkit sam` wrote."""
    with np.load(path) as f:
        masks = np.unpackbits(f["masks"], axis=-1, count=int(f["width"])).astype(bool)
        return Regions(torch.from_numpy(masks), torch.from_numpy(f["predicted_iou"]),
                       torch.from_numpy(f["stability_score"]), torch.from_numpy(f["point_coords"]))


def largest_first(masks: torch.Tensor) -> torch.Tensor:
    """Regions (bool `n h w`) in painting order: by area, largest first (a stable sort: ties keep their order)."""
    return masks[masks.sum((1, 2)).argsort(descending=True, stable=True)]


def paint_regions(classes: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Class ids `h w`: each region of `masks` (bool `n h w`), largest first, painted with the class that
    `classes` (`h w`) holds on most of its pixels (a tie goes to the lower class id); uncovered pixels keep theirs.
    """
    refined = classes.clone()
    for region in largest_first(masks):
        votes = torch.bincount(classes[region].long(), minlength=NUM_CLASSES)
        refined[region] = votes.argmax().to(refined.dtype)  # argmax returns the first maximum: the lower id
    return refined


def region_overlay(image: torch.Tensor, masks: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """uint8 `3 h w`: the image tinted with one colour per region (painted largest first, tab20 colours cycled)
    and each region's outline in full colour; uncovered pixels are left as they are."""
    from matplotlib import colormaps

    from dlcvkit.viz.masks import class_boundaries

    labels = torch.zeros(image.shape[1:], dtype=torch.int64)  # 0: no region, i + 1: region i
    for i, region in enumerate(largest_first(masks)):
        labels[region] = i + 1
    palette = torch.tensor(colormaps["tab20"].colors) * 255
    colours = palette[(labels - 1) % len(palette)].permute(2, 0, 1)
    covered = labels > 0
    picture = image.float()
    picture[:, covered] = picture[:, covered] * (1 - alpha) + colours[:, covered] * alpha
    outline = class_boundaries(labels) & covered
    picture[:, outline] = colours[:, outline]
    return picture.round().clamp(0, 255).to(torch.uint8)


@dataclass
class Segmenter:
    """A trained dlcvkit segmentation run that predicts class ids at an image's own size."""

    model: nn.Module
    input_size: int  # the run's data.img_size

    def classes(self, image: torch.Tensor) -> torch.Tensor:
        """Class ids `h w` (uint8, on the CPU) of a uint8 image `3 h w`."""
        from dlcvkit.tasks.segment import predict_masks

        device = next(self.model.parameters()).device
        return predict_masks(self.model, image[None].to(device), self.input_size)[0].to(torch.uint8).cpu()


def load_segmenter(run_dir: Path, weights: str = "best", device: torch.device | str = "cpu") -> Segmenter:
    """The segmenter of a finished `dlcvkit segment` run."""
    from dlcvkit.runs.segment import load_segment_run

    recipe, model = load_segment_run(run_dir, weights, device)
    return Segmenter(model, recipe.data.img_size)


def sam_image(name: str, image: torch.Tensor, generator, out_dir: Path,
              segmenter: Segmenter | None = None) -> tuple[int, int]:
    """Write OUT/NAME_regions.npz and OUT/NAME_regions.png, and with a segmenter its class mask and the refined
    one (OUT/segmenter/NAME_mask.png, OUT/refined/NAME_mask.png); (regions found, pixels whose class changed)."""
    from dlcvkit.data.images import write_image

    regions = generate_regions(generator, image)
    write_regions(out_dir / f"{name}{REGIONS_SUFFIX}", regions)
    write_image(out_dir / f"{name}{OVERLAY_SUFFIX}", region_overlay(image, regions.masks))
    if segmenter is None:
        return len(regions.masks), 0
    classes = segmenter.classes(image)
    refined = paint_regions(classes, regions.masks)
    write_mask(out_dir / SEGMENTER_DIR / f"{name}_mask.png", classes)
    write_mask(out_dir / REFINED_DIR / f"{name}_mask.png", refined)
    return len(regions.masks), int((refined != classes).sum())


@dataclass
class SamSummary:
    """What `run_sam` did, for its closing lines."""

    masks: list[int]  # regions found in each image
    seconds: float  # SAM and refinement time over all images (no decoding)
    changed: int  # pixels whose class the refinement changed
    pixels: int
    device: torch.device


def run_sam(images: Path, out: Path, checkpoint: Path, *, model_type: str | None = None, points_per_side: int = 32,
            pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95, refine_run: Path | None = None,
            weights: str = "best", device: str = "auto", overwrite: bool = False) -> SamSummary:
    """`sam_image` for every xxxx_sat.jpg of `images`, one image at a time, with a progress bar. OUT must be new
    or empty, or `overwrite`; never an input's folder."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from dlcvkit.data.satellite import SatellitePairs
    from dlcvkit.models.sam import load_sam
    from dlcvkit.outputs import check_output_dir

    check_output_dir(out, "--out", overwrite, {"--data": images, "--refine-run": refine_run,
                                               "--checkpoint": checkpoint})
    dataset = SatellitePairs(images, with_masks=False)
    where = pick_device(device)
    model = load_sam(checkpoint, model_type, where)
    generator = make_generator(model, points_per_side, pred_iou_thresh, stability_score_thresh)
    segmenter = load_segmenter(refine_run, weights, where) if refine_run is not None else None

    out.mkdir(parents=True, exist_ok=True)
    summary = SamSummary([], 0.0, 0, 0, where)
    progress = Progress(TextColumn("[bold]sam"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[masks]} masks"), TimeRemainingColumn(), console=Console(stderr=True))
    with progress:
        bar = progress.add_task("sam", total=len(dataset), masks="-")
        for i in range(len(dataset)):
            sample = dataset[i]
            start = time.perf_counter()
            found, changed = sam_image(sample["name"], sample["image"], generator, out, segmenter)
            summary.seconds += time.perf_counter() - start
            summary.masks.append(found)
            summary.changed += changed
            summary.pixels += sample["image"][0].numel()
            progress.update(bar, advance=1, masks=found)
    return summary
