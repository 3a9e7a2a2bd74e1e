"""Inference and evaluation with a finished segmentation run: `dlcvkit predict seg` and `dlcvkit eval seg --run`."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from dlcvkit.config import Recipe
from dlcvkit.data.cache import cached_for_inference
from dlcvkit.data.satellite import SatellitePairs
from dlcvkit.data.unreadable import describe_skipped, drop_unreadable, incomplete_output
from dlcvkit.data.masks import NUM_CLASSES, OPTION, FormatSource, write_mask
from dlcvkit.engine.distributed import make_accelerator
from dlcvkit.engine.loaders import device_batches, make_eval_loader
from dlcvkit.engine.metrics import Confusion
from dlcvkit.outputs import check_output_dir
from dlcvkit.runs.export import onnx_run
from dlcvkit.runs.load import eval_data, load_run, run_recipe, run_weights, wrong_kind
from dlcvkit.runs.raster import geotiff_folder, predict_rasters
from dlcvkit.runs.slide import check_tiling, slide_masks
from dlcvkit.runs.writer import BackgroundWriter
from dlcvkit.tasks.segment import band_stats, ignored_label, predict_masks, red_class


def load_segment_run(run_dir: Path, weights: str = "best", device: torch.device | str = "cpu"):
    """(recipe, model in eval mode on `device`) of a finished segmentation run, needing nothing but its folder."""
    recipe, _, model = load_run(run_dir, weights, device)
    return _segment(recipe, run_dir), model


def _segment(recipe: Recipe, run_dir: Path) -> Recipe:
    """`recipe`, checked to be a segmentation run's."""
    if recipe.task != "segment":
        raise wrong_kind(run_dir, recipe.task, ("segment",))
    return recipe


def _run_loader(run_dir: Path, folder: Path, with_masks: bool, weights: str, batch_size: int, num_workers: int,
                red_as: int | None, skip_bad: bool = False, mask_format: str | None = None, cache: str = "none"):
    """(accelerator, recipe, model, this process's batches, skipped files, samples) for inference over a P2
    folder read at its own size, images of one size per batch; with `skip_bad`, pairs with a file that does not
    decode are left out (the skipped files, of all samples); masks are in `mask_format` (default: the run's);
    `cache`: the decoded-image cache (dlcvkit.data.cache). `run_dir` may also be a model file from
    `dlcvkit export`, run by onnxruntime on the CPU."""
    model = None
    if Path(run_dir).is_file():
        recipe, model = onnx_run(run_dir, "segment")
    else:
        recipe = _segment(run_recipe(run_dir), run_dir)
        run_weights(run_dir, weights)  # a missing weights file is reported before any data is read
    accelerator = make_accelerator(recipe.train)
    red = red_class(recipe.data.red_as) if red_as is None else red_as
    # without --mask-format, the format the run was trained on (and a refused mask names that recipe key)
    source = OPTION if mask_format else FormatSource(f"data.mask_format of --run {run_dir}", OPTION.switch)
    dataset = SatellitePairs(folder, size=None, with_masks=with_masks, red_as=red,
                             mask_format=mask_format or recipe.data.mask_format, format_source=source,
                             ignore_index=ignored_label(recipe.data),
                             bands=recipe.data.bands or 3, bands_source=f"data.bands of --run {run_dir}")
    data = eval_data(recipe.data, batch_size, num_workers)
    total = len(dataset)
    skipped = drop_unreadable(dataset, f"--skip-bad {folder}", data.num_workers) if skip_bad else []
    sizes = dataset.check(data.num_workers)  # stacked in batches of one size
    dataset = cached_for_inference(dataset, str(folder), cache, recipe.data.cache_dir, data.num_workers,
                                   accelerator)
    # the workers start decoding the first batches now, while the model loads
    batches = device_batches(iter(make_eval_loader(dataset, data, accelerator, sizes)), accelerator.device)
    if model is None:
        recipe, model = load_segment_run(run_dir, weights, accelerator.device)
    return accelerator, recipe, model, batches, skipped, total


def evaluate_run(run_dir: Path, data_dir: Path, *, weights: str = "best", batch_size: int = 0, num_workers: int = -1,
                 red_as: int | None = None, tta: bool = False, skip_bad: bool = False,
                 mask_format: str | None = None) -> tuple[torch.Tensor, bool, int | None]:
    """The 7x7 confusion matrix of a run's predictions on a P2 folder, at the masks' own size, every image
    counted once over all processes (identical on 1 and N processes), pixels labelled the run's data.ignore_index
    left out; whether this is the main process; and that label (None: every pixel counted). With `skip_bad` the
    pairs that do not decode are left out, with a note on stderr; `tta`: see `predict_probs`."""
    accelerator, recipe, model, batches, skipped, total = _run_loader(
        run_dir, data_dir, True, weights, batch_size, num_workers, red_as, skip_bad, mask_format)
    if skip_bad and accelerator.is_main_process:
        print(f"dlcvkit: note: --data {data_dir} (--skip-bad): {describe_skipped(skipped, total)}", file=sys.stderr)
    ignore = ignored_label(recipe.data)
    confusion = Confusion(NUM_CLASSES, accelerator.device, ignore)
    with accelerator.autocast():
        for batch in batches:
            confusion.update(predict_masks(model, batch["image"], recipe.data.img_size, tta, band_stats(recipe.data)),
                             batch["mask"])
    matrix = confusion.reduce(accelerator).cpu()
    return matrix, accelerator.is_main_process, ignore


def predict_run(run_dir: Path, images_dir: Path, out_dir: Path, *, weights: str = "best", batch_size: int = 0,
                num_workers: int = -1, tta: bool = False, skip_bad: bool = False, overwrite: bool = False,
                cache: str = "none", tile: int = 0, overlap: int | None = None) -> int:
    """Write `NAME_mask.png` (course colours, the input's size) for every `NAME_sat.jpg` with a run's model (or
    its ONNX export); returns how many this process wrote (processes share the images under `dlcvkit launch`).
    OUT_DIR must be new or empty, or `overwrite`; never the images' folder. With `skip_bad` the images that do not
    decode are left out, and named in the error raised once every other mask is written (the output is
    incomplete); `cache`: the decoded-image cache (dlcvkit.data.cache); `tile`: sliding windows of that side
    with `overlap` (dlcvkit.runs.slide; 0 = whole images)."""
    overlap = check_tiling(tile, overlap)
    check_output_dir(out_dir, "--out", overwrite, {"--data": images_dir, "--run": run_dir})
    if geotiff_folder(images_dir):
        return predict_rasters(run_dir, images_dir, out_dir, weights=weights, batch_size=batch_size, tta=tta,
                               skip_bad=skip_bad, tile=tile, overlap=overlap)
    accelerator, recipe, model, batches, skipped, total = _run_loader(
        run_dir, images_dir, False, weights, batch_size, num_workers, None, skip_bad, cache=cache)
    accelerator.wait_for_everyone()  # every process checked OUT_DIR before any writes into it
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    with BackgroundWriter() as writer, accelerator.autocast():
        for batch in batches:
            masks = slide_masks(model, batch["image"], recipe.data.img_size, tta, tile, overlap,
                                band_stats(recipe.data)).to(torch.uint8)
            writer.submit(_write_masks, out_dir, batch["name"], masks)
            written += len(masks)
    accelerator.wait_for_everyone()
    if skipped:
        raise incomplete_output(skipped, total, f"masks are in {out_dir}")
    return written


def _write_masks(out_dir: Path, names: list[str], masks: torch.Tensor) -> None:
    """`NAME_mask.png` for each mask `b h w` (uint8, on any device: copied here, off the loop's thread)."""
    for name, mask in zip(names, masks.cpu()):
        write_mask(out_dir / f"{name}_mask.png", mask)
