"""The course's scoring of colour mask files: predictions and labels paired by name, one confusion matrix over
all pixels of all images, and the printout of the course's script."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import torch

from dlcvkit.data.masks import CLASS_NAMES, NUM_CLASSES, SCORED_CLASSES, read_mask
from dlcvkit.engine.metrics import Confusion, iou_per_class, mean_iou
from dlcvkit.errors import DlcvkitError


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
    mean = mean_iou(matrix, SCORED_CLASSES, absent)
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
