"""`dlcvkit eval cls` and `dlcvkit predict cls`: a classification run, or an ensemble of runs, on a folder of
images, under `dlcvkit launch` too (every image counted once; N processes give what 1 gives)."""

from __future__ import annotations

import csv as csv_module
from pathlib import Path

from accelerate.utils import gather_object

from dlcvkit.config import TrainConfig
from dlcvkit.data.cache import cached_for_inference
from dlcvkit.data.folders import UnlabeledFolder
from dlcvkit.data.labeled import open_labeled
from dlcvkit.data.office_home import LabeledCsv
from dlcvkit.data.unreadable import drop_unreadable, incomplete_output
from dlcvkit.engine.distributed import make_accelerator
from dlcvkit.errors import DlcvkitError
from dlcvkit.outputs import check_output_file
from dlcvkit.runs.ensemble import ensemble_prediction, evaluate_members, load_members, member_probabilities
from dlcvkit.runs.export import onnx_members
from dlcvkit.runs.load import eval_data, skip_bad_samples


def open_members(runs: list[Path], weights: str):
    """The accelerator of this (possibly multi-process) command and the runs' models on its device."""
    if not runs:
        raise DlcvkitError("give at least one --run RUN_DIR")
    accelerator = make_accelerator(TrainConfig())
    return accelerator, load_members(runs, weights, accelerator.device)


def evaluate_runs(runs: list[Path], data: Path, *, csv: Path | None = None, layout: str = "auto",
                  weights: str = "best", batch_size: int = 0, num_workers: int = -1,
                  skip_bad: bool = False) -> dict | None:
    """Accuracy, per-class accuracy and confusion matrix of the run or ensemble (see `evaluate_members`) on the
    main process, None on the others; `batch_size` 0 and `num_workers` -1 take the first run's recipe's."""
    accelerator, members = open_members(runs, weights)
    loading = eval_data(members[0].recipe.data, batch_size, num_workers)
    classes = members[0].model.head[-1].out_features

    def open_data(size: int):
        dataset = open_labeled(data, size, layout, csv, num_classes=classes)
        if skip_bad:
            skip_bad_samples(dataset, data, loading.num_workers, accelerator)
        return dataset

    result = evaluate_members(members, open_data, accelerator, loading.eval_batch_size, loading.num_workers)
    accelerator.wait_for_everyone()
    return result if accelerator.is_main_process else None


def predict_runs(runs: list[Path], images: Path, out: Path, *, csv: Path | None = None, weights: str = "best",
                 batch_size: int = 0, num_workers: int = -1, onnx: Path | None = None, skip_bad: bool = False,
                 overwrite: bool = False, cache: str = "none") -> int | None:
    """Write the predicted class of every image (read at the run's `data.img_size`) to the CSV `out`:
    `id,filename,label` in the row order of `csv`, or without it `filename,label` sorted by name; how many rows
    on the main process, None on the others. `onnx`: an export of `dlcvkit export` instead of the runs. With
    `skip_bad` the images that do not decode are left out, and named in the error raised once the others are
    written (the output is incomplete); `cache`: the decoded-image cache (dlcvkit.data.cache)."""
    check_output_file(out, "--out", overwrite, {"--csv": csv, "--data": images})
    if onnx is None:
        accelerator, members = open_members(runs, weights)
    elif runs:
        raise DlcvkitError("predict cls: pass --run RUN_DIR (one or more) or --onnx MODEL.onnx, not both")
    else:
        accelerator, members = onnx_members(onnx)
    loading = eval_data(members[0].recipe.data, batch_size, num_workers)
    skipped: list[Path] = []
    total = 0

    def open_images(size: int):
        nonlocal skipped, total
        dataset = UnlabeledFolder(images, size) if csv is None else LabeledCsv(csv, images, size)
        total = len(dataset)
        if skip_bad:
            skipped = drop_unreadable(dataset, f"--skip-bad {images}", loading.num_workers)
        return cached_for_inference(dataset, f"--data {images}", cache, members[0].recipe.data.cache_dir,
                                    loading.num_workers, accelerator)

    indices, probs, dataset = member_probabilities(members, open_images, accelerator, loading.eval_batch_size,
                                                   loading.num_workers)
    pairs = list(zip(indices.tolist(), ensemble_prediction(probs).tolist()))
    pairs = gather_object(pairs) if accelerator.num_processes > 1 else pairs
    if accelerator.is_main_process:
        labels = dict(pairs)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as f:
            writer = csv_module.writer(f, lineterminator="\n")
            if csv is None:
                writer.writerow(["filename", "label"])
                writer.writerows((name, labels[i]) for i, name in enumerate(dataset.names))
            else:
                writer.writerow(["id", "filename", "label"])
                writer.writerows((dataset.ids[i], name, labels[i]) for i, name in enumerate(dataset.names))
    accelerator.wait_for_everyone()
    if skipped:
        raise incomplete_output(skipped, total, f"predictions are in {out}")
    return len(pairs) if accelerator.is_main_process else None
