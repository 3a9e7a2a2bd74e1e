"""Semantic segmentation of satellite images (course P2): FCN/DeepLabv3 on a timm encoder, pixel cross-entropy
over the 7 land-cover classes, the course's mean IoU, tracked predictions; and the inference and evaluation
that `dlcvkit predict seg` / `dlcvkit eval seg` run on a finished run or on mask files.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dlcvkit.augment.common import normalize, to_unit
from dlcvkit.augment.segment import JointAugment
from dlcvkit.config import DataConfig, Recipe
from dlcvkit.data.cache import cached_for_inference
from dlcvkit.data.datasets import SAT_SUFFIX, SatellitePairs, describe_skipped, drop_unreadable, incomplete_output
from dlcvkit.data.masks import CLASS_NAMES, NUM_CLASSES, SCORED_CLASSES, read_mask, write_mask
from dlcvkit.engine.distributed import make_accelerator
from dlcvkit.engine.loaders import device_batches, make_eval_loader
from dlcvkit.engine.metrics import Confusion, iou_per_class
from dlcvkit.engine.task import RunContext, Task
from dlcvkit.errors import DlcvkitError
from dlcvkit.models.segmenters import INPUT_MULTIPLE, build_segmenter
from dlcvkit.outputs import check_output_dir
from dlcvkit.tasks.registry import load_run, run_recipe
from dlcvkit.viz.masks import prediction_grid

TRACK_DIR = "track"  # RUN_DIR/track/epoch_XXX/NAME_mask.png, and the grid RUN_DIR/track.png


@dataclass
class SegmentData(DataConfig):
    img_size: int = 512  # a multiple of 32; validation mIoU during training is measured at this size
    red_as: int = -1  # class id for red (255,0,0) mask pixels; -1: red is an error (the course defines no red)
    mask_format: Literal["colour", "index"] = "colour"  # colour: course colours; index: grey class ids 0..6


@dataclass
class SegmentModel:
    name: Literal["fcn32s", "fcn16s", "fcn8s", "deeplabv3"] = "fcn32s"
    backbone: str = "vgg16"  # any timm CNN with stride-8/16/32 stages (features_only)
    pretrained: str = ""  # "" = random init, a local weights file, or "hub"
    output_stride: int = 8  # deeplabv3 only: 8 (ASPP rates 12/24/36) or 16 (6/12/18)
    fcn_width: int = 4096  # hidden width of the FCN head (4096 = VGG16's fc6/fc7, the reference)


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
    viz: SegmentViz = field(default_factory=SegmentViz)


def red_class(red_as: int) -> int | None:
    """The recipe's `data.red_as` as SatellitePairs takes it (None: red pixels are an error)."""
    return None if red_as < 0 else red_as


class SegmentTask(Task):
    best_metric = "miou"

    def __init__(self, recipe: SegmentRecipe) -> None:
        super().__init__(recipe)
        size = recipe.data.img_size
        if size % INPUT_MULTIPLE:
            raise DlcvkitError(f"data.img_size={size} must be a multiple of {INPUT_MULTIPLE} for FCN/DeepLab models")
        if not -1 <= recipe.data.red_as < NUM_CLASSES:
            raise DlcvkitError(f"data.red_as={recipe.data.red_as}: use a class id 0..{NUM_CLASSES - 1}, or -1")
        a = recipe.aug
        if not 0 < a.scale_min <= 1:
            raise DlcvkitError(f"aug.scale_min={a.scale_min} must be in (0, 1] (1 = no scale-crop)")
        self._augment = JointAugment(a.flips, a.rot90, a.scale_min, size)
        self._tracked_samples: list[dict] | None = None

    def build_model(self) -> nn.Module:
        m = self.recipe.model
        return build_segmenter(m.name, m.backbone, NUM_CLASSES, m.pretrained, m.output_stride, fcn_width=m.fcn_width)

    def train_dataset(self) -> SatellitePairs:
        data = self.recipe.data
        if not data.train:
            raise DlcvkitError("no training data: pass --data DIR (or set data.train in the recipe)")
        return SatellitePairs(data.train, size=data.img_size, red_as=red_class(data.red_as),
                              mask_format=data.mask_format)

    def val_dataset(self) -> SatellitePairs | None:
        data, track = self.recipe.data, self.recipe.viz.track
        if not data.val:
            if track:
                raise DlcvkitError("--track needs validation data: pass --val DIR (or set data.val)")
            return None
        dataset = SatellitePairs(data.val, size=data.img_size, red_as=red_class(data.red_as),
                                 mask_format=data.mask_format)
        missing = [name for name in track if name not in dataset.names]
        if missing:
            raise DlcvkitError(
                f"--track {missing[0]}: no {missing[0]}{SAT_SUFFIX} in the validation folder {data.val} "
                f"(names look like {', '.join(dataset.names[:3])})"
            )
        return dataset

    def augment(self, batch: dict) -> dict:
        image, mask = self._augment(to_unit(batch["image"]), batch["mask"])
        return batch | {"image": normalize(image), "mask": mask}

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return F.cross_entropy(model(batch["image"]), batch["mask"].long())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches, ctx: RunContext) -> dict[str, float]:
        """Pixel counts of the whole validation set in one 7x7 confusion matrix, reduced once; mean IoU over
        classes 0..5 (the course's rule), per-class IoU and pixel accuracy."""
        confusion = Confusion(NUM_CLASSES, ctx.accelerator.device)
        for batch in batches:
            confusion.update(predict_masks(model, batch["image"], self.recipe.data.img_size), batch["mask"])
        return segmentation_metrics(confusion.reduce(ctx.accelerator))

    def after_epoch(self, model: nn.Module, ctx: RunContext) -> None:
        """Save the predicted masks of the tracked validation images as RUN_DIR/track/epoch_XXX/NAME_mask.png."""
        names = self.recipe.viz.track
        if not names or not ctx.accelerator.is_main_process:
            return
        images = torch.stack([sample["image"] for sample in self._tracked()]).to(ctx.accelerator.device)
        training = model.training
        model.eval()
        masks = predict_masks(model, images, self.recipe.data.img_size).to(torch.uint8).cpu()
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
        rows = [(name, sample["image"], sample["mask"]) for name, sample in zip(names, self._tracked())]
        prediction_grid(Path(ctx.run_dir) / "track.png", rows, columns)

    def _tracked(self) -> list[dict]:
        """The tracked validation samples at the training size (read once)."""
        if self._tracked_samples is None:
            dataset = self.val_dataset()
            self._tracked_samples = [dataset[dataset.names.index(name)] for name in self.recipe.viz.track]
        return self._tracked_samples


def segmentation_metrics(matrix: torch.Tensor) -> dict[str, float]:
    """miou, per-class IoU (`iou_urban`, ...) and pixel accuracy of a 7x7 confusion matrix.

    `miou` is the course's mean over classes 0..5; a class absent from both labels and predictions (0/0, which
    makes the course's mean NaN) is left out of it, so that a small validation set still ranks checkpoints.
    """
    iou = iou_per_class(matrix, SCORED_CLASSES)
    present = iou[~iou.isnan()]
    metrics = {"miou": float(present.mean()) if len(present) else float("nan")}
    metrics |= {f"iou_{name.lower()}": float(v) for name, v in zip(CLASS_NAMES, iou)}
    metrics["pixel_acc"] = float(matrix.diagonal().sum() / matrix.sum().clamp_min(1))
    return metrics


@torch.no_grad()
def predict_masks(model: nn.Module, images: torch.Tensor, input_size: int, tta: bool = False) -> torch.Tensor:
    """Class ids `b h w` (int64) of uint8 images `b 3 h w`, at the images' own size.

    The images are resized to the model's `input_size` (the training `data.img_size`) and the class
    probabilities back; with `tta` they are averaged over the image and its horizontal and vertical flips.
    """
    x = normalize(to_unit(images))
    size = tuple(x.shape[-2:])
    if size != (input_size, input_size):
        x = F.interpolate(x, (input_size, input_size), mode="bilinear", antialias=True, align_corners=False)
    probs = model(x).float().softmax(dim=1)
    if tta:
        for dims in ((-1,), (-2,)):
            probs += model(x.flip(dims)).float().softmax(dim=1).flip(dims)
    if tuple(probs.shape[-2:]) != size:
        probs = F.interpolate(probs, size, mode="bilinear", align_corners=False)
    return probs.argmax(dim=1)


# ------------------------------------------------------------------------------- mask files, the course's rule

MASK_FILE_SUFFIX = ".png"


def pair_mask_files(pred_dir: Path, label_dir: Path) -> list[str]:
    """The `.png` file names present in both folders (paired by name); any file without its partner is an error."""
    def names(folder: Path, what: str) -> set[str]:
        if not folder.is_dir():
            raise DlcvkitError(f"{what} {folder} is not a folder")
        return {n for n in os.listdir(folder) if n.lower().endswith(MASK_FILE_SUFFIX) and not n.startswith(".")}

    preds, labels = names(pred_dir, "--pred"), names(label_dir, "--labels")
    for extra, here, there in ((preds - labels, pred_dir, label_dir), (labels - preds, label_dir, pred_dir)):
        if extra:
            first = sorted(extra)[0]
            more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
            raise DlcvkitError(
                f"{first} in {here} has no file of the same name in {there}{more}; predictions and labels are "
                "paired by name"
            )
    if not preds:
        raise DlcvkitError(f"no .png masks in {pred_dir} and {label_dir}")
    return sorted(preds)


def confusion_of_mask_files(pred_dir: Path, label_dir: Path, red_as: int | None = None,
                            mask_format: str = "colour") -> tuple[torch.Tensor, int]:
    """The 7x7 confusion matrix (rows labels, columns predictions) summed over all pixels of all paired masks
    (both folders in `mask_format`), and the number of pairs."""
    confusion = Confusion(NUM_CLASSES)
    names = pair_mask_files(pred_dir, label_dir)
    for name in names:
        pred = read_mask(pred_dir / name, red_as, mask_format)
        label = read_mask(label_dir / name, red_as, mask_format)
        if pred.shape != label.shape:
            raise DlcvkitError(
                f"{pred_dir / name} is {pred.shape[1]}x{pred.shape[0]} but {label_dir / name} is "
                f"{label.shape[1]}x{label.shape[0]} (width x height); predict at the labels' size"
            )
        confusion.update(pred, label)
    return confusion.matrix, len(names)


def iou_report(matrix: torch.Tensor, absent: Literal["nan", "skip"] = "nan") -> tuple[str, dict, list[str]]:
    """(the course's printout, the numbers as JSON-ready data, notes for stderr) of a 7x7 confusion matrix.

    absent = "nan": a class in neither labels nor predictions has IoU 0/0 = nan and so has the mean, as in the
    course's script; "skip": the mean is taken over the other classes.
    """
    iou = iou_per_class(matrix, SCORED_CLASSES)
    missing = [c for c in range(SCORED_CLASSES) if iou[c].isnan()]
    kept = iou if absent == "nan" else iou[~iou.isnan()]
    mean = float(kept.mean()) if len(kept) else float("nan")
    # the course's mean_iou_evaluate.py: print('class #%d : %1.5f' % ...), then print('\nmean_iou: %f\n' % ...)
    text = "".join(f"class #{c} : {float(v):1.5f}\n" for c, v in enumerate(iou)) + f"\nmean_iou: {mean:f}\n\n"
    notes = [
        f"class #{c} ({CLASS_NAMES[c]}) occurs in neither the predictions nor the labels: its IoU is 0/0 = nan; "
        + ("so is mean_iou, as in the course's script (--absent skip averages the other classes)"
           if absent == "nan" else "mean_iou averages the other classes (--absent skip)")
        for c in missing
    ]
    numbers = {
        "classes": list(CLASS_NAMES[:SCORED_CLASSES]),
        "iou": [_json_number(float(v)) for v in iou],
        "mean_iou": _json_number(mean),
        "absent_classes": missing,
        "absent_rule": absent,
        "pixels": int(matrix.sum()),
        "confusion": matrix.tolist(),
    }
    return text, numbers, notes


def _json_number(value: float) -> float | None:
    """JSON has no NaN: null instead."""
    return None if math.isnan(value) else value


# ----------------------------------------------------------------------------------------- finished runs


def load_segment_run(run_dir: Path, weights: str = "best", device: torch.device | str = "cpu"):
    """(recipe, model in eval mode on `device`) of a finished segmentation run, needing nothing but its folder."""
    recipe, _, model = load_run(run_dir, weights, device)
    if recipe.task != "segment":
        raise DlcvkitError(f"--run {run_dir} is a '{recipe.task}' run, not a segmentation run")
    return recipe, model


def _run_loader(run_dir: Path, folder: Path, with_masks: bool, weights: str, batch_size: int, num_workers: int,
                red_as: int | None, skip_bad: bool = False, mask_format: str | None = None, cache: str = "none"):
    """(accelerator, recipe, model, this process's batches, skipped files, samples) for inference over a P2
    folder read at its own size, images of one size per batch; with `skip_bad`, pairs with a file that does not
    decode are left out (the skipped files, of all samples); masks are in `mask_format` (default: the run's);
    `cache`: the decoded-image cache (dlcvkit.data.cache). `run_dir` may also be a model file from
    `dlcvkit export`, run by onnxruntime on the CPU."""
    if Path(run_dir).is_file():
        from dlcvkit.runs.export import onnx_run

        recipe, model = onnx_run(run_dir, "segment")
        accelerator = make_accelerator(recipe.train)
    else:
        accelerator = make_accelerator(run_recipe(run_dir).train)
        recipe, model = load_segment_run(run_dir, weights, accelerator.device)
    red = red_class(recipe.data.red_as) if red_as is None else red_as
    dataset = SatellitePairs(folder, size=None, with_masks=with_masks, red_as=red,
                             mask_format=mask_format or recipe.data.mask_format)
    data = replace(
        recipe.data,
        eval_batch_size=batch_size or recipe.data.eval_batch_size or recipe.data.batch_size,
        num_workers=recipe.data.num_workers if num_workers < 0 else num_workers,
    )
    total = len(dataset)
    skipped = drop_unreadable(dataset, f"--skip-bad {folder}", data.num_workers) if skip_bad else []
    sizes = dataset.check(data.num_workers)  # stacked in batches of one size
    dataset = cached_for_inference(dataset, str(folder), cache, recipe.data.cache_dir, data.num_workers,
                                   accelerator)
    batches = device_batches(make_eval_loader(dataset, data, accelerator, sizes), accelerator.device)
    return accelerator, recipe, model, batches, skipped, total


def evaluate_run(run_dir: Path, data_dir: Path, *, weights: str = "best", batch_size: int = 0, num_workers: int = -1,
                 red_as: int | None = None, tta: bool = False, skip_bad: bool = False,
                 mask_format: str | None = None) -> tuple[torch.Tensor, bool]:
    """The 7x7 confusion matrix of a run's predictions on a P2 folder, at the masks' own size, every image
    counted once over all processes (identical on 1 and N processes); and whether this is the main process.
    With `skip_bad` the pairs that do not decode are left out, with a note on stderr."""
    accelerator, recipe, model, batches, skipped, total = _run_loader(
        run_dir, data_dir, True, weights, batch_size, num_workers, red_as, skip_bad, mask_format)
    if skip_bad and accelerator.is_main_process:
        print(f"dlcvkit: note: --data {data_dir} (--skip-bad): {describe_skipped(skipped, total)}", file=sys.stderr)
    confusion = Confusion(NUM_CLASSES, accelerator.device)
    with accelerator.autocast():
        for batch in batches:
            confusion.update(predict_masks(model, batch["image"], recipe.data.img_size, tta), batch["mask"])
    matrix = confusion.reduce(accelerator).cpu()
    return matrix, accelerator.is_main_process


def predict_run(run_dir: Path, images_dir: Path, out_dir: Path, *, weights: str = "best", batch_size: int = 0,
                num_workers: int = -1, tta: bool = False, skip_bad: bool = False, overwrite: bool = False,
                cache: str = "none") -> int:
    """Write `NAME_mask.png` (course colours, the input's size) for every `NAME_sat.jpg` with a run's model (or
    its ONNX export); returns how many this process wrote (processes share the images under `dlcvkit launch`).
    OUT_DIR must be new or empty, or `overwrite`; never the images' folder. With `skip_bad` the images that do not
    decode are left out, and named in the error raised once every other mask is written (the output is
    incomplete); `cache`: the decoded-image cache (dlcvkit.data.cache)."""
    check_output_dir(out_dir, "--out", overwrite, {"--images": images_dir, "--run": run_dir})
    accelerator, recipe, model, batches, skipped, total = _run_loader(
        run_dir, images_dir, False, weights, batch_size, num_workers, None, skip_bad, cache=cache)
    accelerator.wait_for_everyone()  # every process checked OUT_DIR before any writes into it
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    with accelerator.autocast():
        for batch in batches:
            masks = predict_masks(model, batch["image"], recipe.data.img_size, tta).to(torch.uint8).cpu()
            for name, mask in zip(batch["name"], masks):
                write_mask(out_dir / f"{name}_mask.png", mask)
            written += len(masks)
    accelerator.wait_for_everyone()
    if skipped:
        raise incomplete_output(skipped, total, f"masks are in {out_dir}")
    return written
