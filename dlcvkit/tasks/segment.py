"""Semantic segmentation of satellite images (course P2): FCN, DeepLabv3 or smp's UNet, DeepLabV3+ and FPN on a
timm encoder, pixel cross-entropy (or Dice, focal, Lovász) over the 7 land-cover classes, the course's mean IoU,
tracked predictions; RGB JPEGs or multispectral GeoTIFFs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dlcvkit.augment.common import normalize, to_unit
from dlcvkit.augment.segment import JointAugment
from dlcvkit.config import DataConfig, Recipe
from dlcvkit.data.geotiff import band_statistics, raster_header
from dlcvkit.data.satellite import SAT_SUFFIX, SatellitePairs
from dlcvkit.data.masks import CLASS_NAMES, NUM_CLASSES, RECIPE, SCORED_CLASSES, UNKNOWN, read_mask, write_mask
from dlcvkit.engine.metrics import Confusion, iou_per_class, mean_iou
from dlcvkit.engine.task import RunContext, Task
from dlcvkit.errors import DlcvkitError
from dlcvkit.models.seg_losses import build_seg_loss
from dlcvkit.models.segmenters import build_segmenter, input_multiple
from dlcvkit.viz.masks import prediction_grid

TRACK_DIR = "track"  # RUN_DIR/track/epoch_XXX/NAME_mask.png
TRACK_GRID = "track.png"  # RUN_DIR/track.png: image, ground truth, predictions after three epochs


@dataclass
class SegmentData(DataConfig):
    img_size: int = 512  # a multiple of 32 (deeplabv3plus: of output_stride); validation mIoU is measured at it
    red_as: int = -1  # class id for red (255,0,0) mask pixels; -1: red is an error (the course defines no red)
    mask_format: Literal["colour", "index"] = "colour"  # colour: course colours; index: grey class ids 0..6
    # pixels with this label are left out of the loss and of the confusion matrix (mIoU): a class id 0..6, or 255
    # in index masks (their "no label" value); -1: every pixel counts (the course's rule)
    ignore_index: int = -1
    bands: int = 0  # image bands (0 = the first training image's; RGB JPEG/PNG: 3)
    # per-band mean and std of the raw pixel values the model's input is normalised by ([] = computed from the
    # training set for GeoTIFFs; ImageNet's on 0..1 pixels for RGB JPEG/PNG, as timm's backbones expect)
    band_mean: list[float] = field(default_factory=list)
    band_std: list[float] = field(default_factory=list)


@dataclass
class SegmentModel:
    name: Literal["fcn32s", "fcn16s", "fcn8s", "deeplabv3", "unet", "deeplabv3plus", "fpn"] = "fcn32s"
    backbone: str = "vgg16"  # any timm CNN with stride-8/16/32 stages (features_only)
    pretrained: str = ""  # "" = random init, a local weights file, or "hub"
    output_stride: int = 8  # deeplabv3(plus) only: 8 (ASPP rates 12/24/36) or 16 (6/12/18)
    fcn_width: int = 4096  # FCNs only: hidden width of the head (4096 = VGG16's fc6/fc7, the reference)


@dataclass
class SegmentLoss:
    # ce: torch's pixel cross-entropy (the course's); dice, focal, lovasz: segmentation_models_pytorch's
    # multiclass losses; ce+dice: their sum
    name: Literal["ce", "dice", "focal", "lovasz", "ce+dice"] = "ce"
    # one weight per class id 0..6 ([] = none): ce weights pixels, dice and focal their per-class losses, ce+dice
    # both; lovasz takes none (refused)
    class_weights: list[float] = field(default_factory=list)


@dataclass
class SegmentAug:
    flips: bool = True  # random horizontal and vertical flips
    rot90: bool = True  # random quarter turns
    scale_min: float = 1.0  # random crops of scale_min..1 of the image area, resized back (1.0 = off)


@dataclass
class SegmentViz:
    track: list[str] = field(default_factory=list)  # validation image names (e.g. "0008") predicted every epoch


@dataclass
class SegmentRecipe(Recipe):
    task: str = "segment"
    data: SegmentData = field(default_factory=SegmentData)
    model: SegmentModel = field(default_factory=SegmentModel)
    aug: SegmentAug = field(default_factory=SegmentAug)
    loss: SegmentLoss = field(default_factory=SegmentLoss)
    viz: SegmentViz = field(default_factory=SegmentViz)


def red_class(red_as: int) -> int | None:
    """The recipe's `data.red_as` as SatellitePairs takes it (None: red pixels are an error)."""
    return None if red_as < 0 else red_as


IGNORE_INDEX_MASKS = 255  # the "no label" value of index masks that data.ignore_index may name


def ignored_label(data: SegmentData) -> int | None:
    """The recipe's `data.ignore_index` as the readers, losses and confusion matrix take it (None: unset), or a
    DlcvkitError naming the key."""
    value = data.ignore_index
    if value == -1:
        return None
    if 0 <= value < NUM_CLASSES or (value == IGNORE_INDEX_MASKS and data.mask_format == "index"):
        return value
    if value == IGNORE_INDEX_MASKS:
        raise DlcvkitError(f"data.ignore_index={value} goes with data.mask_format='index' (grey masks whose "
                           f"{value} pixels have no label); colour masks have no such value: use a class id "
                           f"0..{NUM_CLASSES - 1} (e.g. {UNKNOWN} for Unknown), or -1")
    raise DlcvkitError(f"data.ignore_index={value}: use a class id 0..{NUM_CLASSES - 1}, {IGNORE_INDEX_MASKS} "
                       "(index masks), or -1 (every pixel counts)")


class SegmentTask(Task):
    best_metric = "miou"
    run_files = (TRACK_DIR, TRACK_GRID)

    def __init__(self, recipe: SegmentRecipe) -> None:
        super().__init__(recipe)
        size = recipe.data.img_size
        m = recipe.model
        multiple = input_multiple(m.name, m.output_stride)
        if size % multiple:
            raise DlcvkitError(f"data.img_size={size} must be a multiple of {multiple} for model.name={m.name}, "
                               f"e.g. {max(size // multiple, 1) * multiple}")
        if not -1 <= recipe.data.red_as < NUM_CLASSES:
            raise DlcvkitError(f"data.red_as={recipe.data.red_as}: use a class id 0..{NUM_CLASSES - 1}, or -1")
        a = recipe.aug
        if not 0 < a.scale_min <= 1:
            raise DlcvkitError(f"aug.scale_min={a.scale_min} must be in (0, 1] (1 = no scale-crop)")
        self._augment = JointAugment(a.flips, a.rot90, a.scale_min, size)
        self._ignore = ignored_label(recipe.data)
        self._criterion = build_seg_loss(recipe.loss.name, recipe.loss.class_weights, self._ignore, NUM_CLASSES)
        self._stats = band_stats(recipe.data)
        self._tracked_samples: list[dict] | None = None

    def build_model(self) -> nn.Module:
        m = self.recipe.model
        return build_segmenter(m.name, m.backbone, NUM_CLASSES, m.pretrained, m.output_stride, fcn_width=m.fcn_width,
                               in_channels=self.recipe.data.bands or 3)

    @classmethod
    def resolve(cls, recipe: SegmentRecipe) -> SegmentRecipe:
        """`data.bands` 0 becomes the first training image's band count; for GeoTIFFs, empty `data.band_mean`
        and `data.band_std` become the training set's (over all its pixels, read once)."""
        data = recipe.data
        if data.bands and data.band_mean:
            return recipe
        dataset = cls.open_train(recipe)
        bands = data.bands or (raster_header(dataset.files(0)[0]).count if dataset.geotiff else 3)
        data = replace(data, bands=bands)
        if dataset.geotiff and not data.band_mean:
            mean, std = band_statistics([dataset.files(i)[0] for i in range(len(dataset))], data.bands)
            data = replace(data, band_mean=mean, band_std=std)
        return replace(recipe, data=data)

    @classmethod
    def open_train(cls, recipe: SegmentRecipe) -> SatellitePairs:
        data = recipe.data
        if not data.train:
            raise DlcvkitError("no training data: pass --data DIR (or set data.train in the recipe)")
        return SatellitePairs(data.train, size=data.img_size, red_as=red_class(data.red_as),
                              mask_format=data.mask_format, format_source=RECIPE, ignore_index=ignored_label(data),
                              bands=data.bands or None)

    def val_dataset(self) -> SatellitePairs | None:
        data, track = self.recipe.data, self.recipe.viz.track
        if not data.val:
            if track:
                raise DlcvkitError("--track needs validation data: pass --val DIR (or set data.val)")
            return None
        dataset = SatellitePairs(data.val, size=data.img_size, red_as=red_class(data.red_as),
                                 mask_format=data.mask_format, format_source=RECIPE, ignore_index=self._ignore,
                                 bands=data.bands or None)
        missing = [name for name in track if name not in dataset.names]
        if missing:
            raise DlcvkitError(
                f"--track {missing[0]}: no {missing[0]}{SAT_SUFFIX} in the validation folder {data.val} "
                f"(names look like {', '.join(dataset.names[:3])})"
            )
        return dataset

    def augment(self, batch: dict) -> dict:
        image, mask = self._augment(scale_images(batch["image"], self._stats), batch["mask"])
        return batch | {"image": standardize(image, self._stats), "mask": mask}

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        logits = model(batch["image"])
        # .to: the cross-entropy's class weights follow the logits onto the device (a no-op once there)
        return self._criterion.to(logits.device)(logits, batch["mask"].long())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches, ctx: RunContext) -> dict[str, float]:
        """Pixel counts of the whole validation set in one 7x7 confusion matrix, reduced once; mean IoU over
        classes 0..5 (the course's rule), per-class IoU and pixel accuracy; pixels labelled data.ignore_index
        are not counted."""
        confusion = Confusion(NUM_CLASSES, ctx.accelerator.device, self._ignore)
        for batch in batches:
            confusion.update(predict_masks(model, batch["image"], self.recipe.data.img_size, stats=self._stats),
                             batch["mask"])
        return segmentation_metrics(confusion.reduce(ctx.accelerator))

    def after_epoch(self, model: nn.Module, ctx: RunContext) -> None:
        """Save the predicted masks of the tracked validation images as RUN_DIR/track/epoch_XXX/NAME_mask.png."""
        names = self.recipe.viz.track
        if not names or not ctx.accelerator.is_main_process:
            return
        images = torch.stack([sample["image"] for sample in self._tracked()]).to(ctx.accelerator.device)
        training = model.training
        model.eval()
        masks = predict_masks(model, images, self.recipe.data.img_size, stats=self._stats).to(torch.uint8).cpu()
        model.train(training)
        folder = Path(ctx.run_dir) / TRACK_DIR / f"epoch_{ctx.epoch:03d}"
        for name, mask in zip(names, masks):
            write_mask(folder / f"{name}_mask.png", mask)

    def export(self, model: nn.Module, ctx: RunContext) -> None:
        """The grid RUN_DIR/track.png: image, ground truth, predictions after the first, middle and last epoch."""
        names = self.recipe.viz.track
        epochs = sorted((Path(ctx.run_dir) / TRACK_DIR).glob("epoch_*"))
        if not names or not epochs:
            return
        chosen = sorted({epochs[0], epochs[len(epochs) // 2], epochs[-1]})
        columns = [
            (f"epoch {int(folder.name.removeprefix('epoch_'))}", [read_mask(folder / f"{n}_mask.png") for n in names])
            for folder in chosen
        ]
        # ignored pixels are drawn as Unknown (black): the course's palette has no colour for them
        rows = [(name, sample["image"], sample["mask"].masked_fill(sample["mask"] >= NUM_CLASSES, UNKNOWN))
                for name, sample in zip(names, self._tracked())]
        prediction_grid(Path(ctx.run_dir) / TRACK_GRID, rows, columns)

    def _tracked(self) -> list[dict]:
        """The tracked validation samples at the training size (read once)."""
        if self._tracked_samples is None:
            dataset = self.val_dataset()
            self._tracked_samples = [dataset[dataset.names.index(name)] for name in self.recipe.viz.track]
        return self._tracked_samples


def segmentation_metrics(matrix: torch.Tensor) -> dict[str, float]:
    """miou, per-class IoU (`iou_urban`, ...) and pixel accuracy of a 7x7 confusion matrix.

    `miou` is the course's mean over classes 0..5, a class absent from both labels and predictions left out.
    """
    iou = iou_per_class(matrix, SCORED_CLASSES)
    metrics = {"miou": mean_iou(matrix, SCORED_CLASSES, absent="skip")}
    metrics |= {f"iou_{name.lower()}": float(v) for name, v in zip(CLASS_NAMES, iou)}
    metrics["pixel_acc"] = float(matrix.diagonal().sum() / matrix.sum().clamp_min(1))
    return metrics


Stats = tuple[list[float], list[float]]  # per-band (mean, std) of raw values; empty: ImageNet's of 0..1 pixels


def band_stats(data: SegmentData) -> Stats:
    """The recipe's `data.band_mean` and `data.band_std`, checked against `data.bands`."""
    for key, values in (("band_mean", data.band_mean), ("band_std", data.band_std)):
        if values and data.bands and len(values) != data.bands:
            raise DlcvkitError(f"data.{key} has {len(values)} values but data.bands is {data.bands}; give one "
                               "per band, or [] to compute them from the training set")
    if bool(data.band_mean) != bool(data.band_std) or any(s <= 0 for s in data.band_std):
        raise DlcvkitError("data.band_mean and data.band_std go together, the std positive: give both, one value "
                           "per band, or neither")
    return data.band_mean, data.band_std


def scale_images(images: torch.Tensor, stats: Stats = ([], [])) -> torch.Tensor:
    """Float images in the units of `stats`: raw values for given band statistics, else 0..1 (uint8 / 255)."""
    if stats[0]:
        return images.float()
    return to_unit(images) if images.dtype == torch.uint8 else images / 255  # a uint8 GeoTIFF, as float


def standardize(images: torch.Tensor, stats: Stats = ([], [])) -> torch.Tensor:
    """(x - mean) / std per band: `stats`, or ImageNet's."""
    return normalize(images, *stats) if stats[0] else normalize(images)


# test-time augmentation: the image and its horizontal, vertical and both-axes flips (the dims flipped)
TTA_FLIPS = ((), (-1,), (-2,), (-2, -1))
TTA_NOTE = "TTA: class probabilities averaged over the image and its horizontal, vertical and both-axes flips"


@torch.no_grad()
def predict_masks(model: nn.Module, images: torch.Tensor, input_size: int, tta: bool = False,
                  stats: Stats = ([], [])) -> torch.Tensor:
    """Class ids `b h w` (int64) of images `b c h w`, at the images' own size (see `predict_probs`)."""
    return predict_probs(model, images, input_size, tta, stats).argmax(dim=1)


@torch.no_grad()
def predict_probs(model: nn.Module, images: torch.Tensor, input_size: int, tta: bool = False,
                  stats: Stats = ([], [])) -> torch.Tensor:
    """Class probabilities `b C h w` (float32; with `tta` averaged over the views) of images `b c h w` (uint8
    RGB, or float raw band values normalised by `stats`), at the images' own size.

    The images are resized to the model's `input_size` (the training `data.img_size`) and the class
    probabilities back; with `tta` they are the mean of the softmax over the 4 views of TTA_FLIPS, each flipped
    back.
    """
    x = standardize(scale_images(images, stats), stats)
    size = tuple(x.shape[-2:])
    if size != (input_size, input_size):
        x = F.interpolate(x, (input_size, input_size), mode="bilinear", antialias=True, align_corners=False)
    probs = model(x).float().softmax(dim=1)
    if tta:
        for dims in TTA_FLIPS[1:]:
            probs += model(x.flip(dims)).float().softmax(dim=1).flip(dims)
        probs /= len(TTA_FLIPS)
    if tuple(probs.shape[-2:]) != size:
        probs = F.interpolate(probs, size, mode="bilinear", align_corners=False)
    return probs
