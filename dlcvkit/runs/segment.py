"""Inference and evaluation with a finished segmentation run: `dlcvkit predict seg` and `dlcvkit eval seg --run`."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from dlcvkit.data.datasets import SAT_SUFFIX, SatellitePairs
from dlcvkit.data.masks import NUM_CLASSES, write_mask
from dlcvkit.engine.distributed import make_accelerator
from dlcvkit.engine.loaders import device_batches, make_eval_loader
from dlcvkit.engine.metrics import Confusion
from dlcvkit.errors import DlcvkitError
from dlcvkit.runs.load import eval_data, load_run, run_recipe, skip_bad_samples
from dlcvkit.tasks.segment import predict_masks, red_class


def load_segment_run(run_dir: Path, weights: str = "best", device: torch.device | str = "cpu"):
    """(recipe, model in eval mode on `device`) of a finished segmentation run, needing nothing but its folder."""
    recipe, _, model = load_run(run_dir, weights, device)
    if recipe.task != "segment":
        raise DlcvkitError(f"--run {run_dir} is a '{recipe.task}' run, not a segmentation run")
    return recipe, model


def _run_loader(run_dir: Path, folder: Path, with_masks: bool, weights: str, batch_size: int, num_workers: int,
                red_as: int | None, skip_bad: bool = False):
    """(accelerator, recipe, model, this process's batches) for inference over a P2 folder read at its own size;
    with `skip_bad`, pairs with a file that does not decode are left out (reported on stderr)."""
    accelerator = make_accelerator(run_recipe(run_dir).train)
    recipe, model = load_segment_run(run_dir, weights, accelerator.device)
    red = red_class(recipe.data.red_as) if red_as is None else red_as
    dataset = SatellitePairs(folder, size=None, with_masks=with_masks, red_as=red)
    data = eval_data(recipe, batch_size, num_workers)
    if skip_bad:
        skip_bad_samples(dataset, folder, data.num_workers, accelerator)
    if data.eval_batch_size > 1:
        _check_one_size(dataset)
    batches = device_batches(make_eval_loader(dataset, data, accelerator), accelerator.device)
    return accelerator, recipe, model, batches


def _check_one_size(dataset: SatellitePairs) -> None:
    """Batches stack images, so a folder must hold one image size (read from the file headers only)."""
    first = None
    for name in dataset.names:
        path = dataset.root / f"{name}{SAT_SUFFIX}"
        try:
            with Image.open(path) as img:
                size = img.size
        except (UnidentifiedImageError, OSError) as e:
            raise DlcvkitError(f"cannot decode image {path}: {e}; remove or replace it") from None
        if first is None:
            first = (path.name, size)
        elif size != first[1]:
            raise DlcvkitError(
                f"{path.name} is {size[0]}x{size[1]} but {first[0]} is {first[1][0]}x{first[1][1]} in "
                f"{dataset.root}; batches need one size: pass --batch-size 1"
            )


def evaluate_run(run_dir: Path, data_dir: Path, *, weights: str = "best", batch_size: int = 0, num_workers: int = -1,
                 red_as: int | None = None, tta: bool = False, skip_bad: bool = False) -> tuple[torch.Tensor, bool]:
    """The 7x7 confusion matrix of a run's predictions on a P2 folder, at the masks' own size, every image
    counted once over all processes (identical on 1 and N processes); and whether this is the main process."""
    accelerator, recipe, model, batches = _run_loader(run_dir, data_dir, True, weights, batch_size, num_workers,
                                                      red_as, skip_bad)
    confusion = Confusion(NUM_CLASSES, accelerator.device)
    with accelerator.autocast():
        for batch in batches:
            confusion.update(predict_masks(model, batch["image"], recipe.data.img_size, tta), batch["mask"])
    matrix = confusion.reduce(accelerator).cpu()
    return matrix, accelerator.is_main_process


def predict_run(run_dir: Path, images_dir: Path, out_dir: Path, *, weights: str = "best", batch_size: int = 0,
                num_workers: int = -1, tta: bool = False) -> int:
    """Write `NAME_mask.png` (course colours, the input's size) for every `NAME_sat.jpg`; returns how many this
    process wrote (processes share the images under `dlcvkit launch`)."""
    accelerator, recipe, model, batches = _run_loader(run_dir, images_dir, False, weights, batch_size, num_workers,
                                                      None)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    with accelerator.autocast():
        for batch in batches:
            masks = predict_masks(model, batch["image"], recipe.data.img_size, tta).to(torch.uint8).cpu()
            for name, mask in zip(batch["name"], masks):
                write_mask(out_dir / f"{name}_mask.png", mask)
            written += len(masks)
    accelerator.wait_for_everyone()
    return written
