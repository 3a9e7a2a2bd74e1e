"""Confusion-matrix accumulation for segmentation (7 classes, 8 x 512 x 512 batches): the engine's `Confusion`
vs torchmetrics' `MulticlassJaccardIndex(average="none")` (with and without its argument validation), a
per-class loop and an int64 `bincount`, after checking that all give the same matrix; and the end-to-end
`dlcvkit eval seg --pred --labels` time for a folder pair of 512 x 512 masks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from dlcvkit.bench.timing import Timing, check_equal, measure, record
from dlcvkit.data.masks import NUM_CLASSES, read_mask, write_mask
from dlcvkit.data.synth import synth_seg
from dlcvkit.engine.metrics import Confusion
from dlcvkit.errors import DlcvkitError

BENCH = "miou"
EVAL_BENCH = "eval_seg"
REFERENCE = "torchmetrics"

# A contender: make() -> (update(pred, target), matrix() -> C x C counts, rows labels, columns predictions)
Contender = Callable[[], tuple[Callable[[torch.Tensor, torch.Tensor], None], Callable[[], torch.Tensor]]]


def confusion_contenders(classes: int, device: torch.device) -> dict[str, Contender]:
    try:
        from torchmetrics.classification import MulticlassJaccardIndex
    except ImportError:
        raise DlcvkitError("bench miou compares with torchmetrics: pip install 'dlcvkit[bench]'") from None

    def dlcvkit():
        confusion = Confusion(classes, device)
        return confusion.update, lambda: confusion.matrix

    def torchmetrics(validate: bool = True):
        metric = MulticlassJaccardIndex(classes, average="none", validate_args=validate).to(device)
        return metric.update, lambda: metric.confmat

    def per_class_loop():
        matrix = torch.zeros(classes, classes, dtype=torch.int64, device=device)

        def update(pred, target):  # row c: predictions on the pixels labelled c
            for c in range(classes):
                matrix[c] += torch.bincount(pred[target == c], minlength=classes)

        return update, lambda: matrix

    def bincount_int64():  # torchvision's references/segmentation/utils.py ConfusionMatrix
        matrix = torch.zeros(classes, classes, dtype=torch.int64, device=device)

        def update(pred, target):
            index = target.reshape(-1).long() * classes + pred.reshape(-1).long()
            matrix.add_(torch.bincount(index, minlength=classes * classes).view(classes, classes))

        return update, lambda: matrix

    return {
        "dlcvkit": dlcvkit,
        "torchmetrics": torchmetrics,
        "torchmetrics_novalidate": lambda: torchmetrics(validate=False),
        "per_class_loop": per_class_loop,
        "bincount_int64": bincount_int64,
    }


def segmentation_batch(batch: int, size: int, classes: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictions int64 `b h w`, as argmax gives them; labels uint8 `b h w`, as the loader gives them): blocky
    label maps and predictions that agree with them on about 3 pixels in 4."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.randint(0, classes, (batch, 1, size // 16, size // 16), generator=g).float()
    target = torch.nn.functional.interpolate(coarse, size=(size, size), mode="nearest")[:, 0].to(torch.uint8)
    noise = torch.randint(0, classes, target.shape, generator=g)
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.75, target.long(), noise)
    return pred.to(device), target.to(device)


def check_same_confusion(contenders: dict[str, Contender], pred: torch.Tensor, target: torch.Tensor,
                         reference: str = REFERENCE) -> None:
    """Run one update of every contender on fresh state and compare its matrix with the reference's."""
    matrices = {}
    for name, make in contenders.items():
        update, matrix = make()
        update(pred, target)
        matrices[name] = matrix()
    for name, matrix in matrices.items():
        check_equal(name, reference, matrices[reference], matrix)


def bench_miou(*, batch: int, size: int, classes: int, device: torch.device, repeats: int, warmup: int,
               contenders: dict[str, Contender] | None = None) -> list[dict]:
    """Records of the time of one batch's update for every contender (checked first)."""
    pred, target = segmentation_batch(batch, size, classes, device)
    contenders = contenders or confusion_contenders(classes, device)
    check_same_confusion(contenders, pred, target)
    case = f"{classes} classes {batch}x{size}x{size}"
    records = []
    for name, make in contenders.items():
        update, _ = make()
        timing = measure(lambda: update(pred, target), items=batch, repeats=repeats, warmup=warmup, device=device)
        records.append(record(BENCH, case, name, timing, classes=classes, batch=batch, img_size=size))
    return records


def eval_masks(cache: Path, masks: int, size: int) -> tuple[Path, Path]:
    """(predictions, labels): folders of `masks` course-colour masks; labels from `dlcvkit data synth seg`,
    predictions the labels shifted by 1/32 of the image (a plausible ~0.8 mIoU). Made once per cache folder."""
    root = cache / f"eval_seg_{masks}x{size}"
    labels, preds, done = root / "labels", root / "pred", root / ".complete"
    if not done.exists():
        synth_seg(labels, masks, size, seed=0, overwrite=True)
        for path in sorted(labels.glob("*_mask.png")):
            write_mask(preds / path.name, torch.roll(read_mask(path), shifts=(size // 32, size // 32), dims=(0, 1)))
        done.touch()
    return preds, labels


def bench_eval_seg(cache: Path, *, masks: int, size: int, repeats: int, warmup: int) -> list[dict]:
    """The `eval seg --pred DIR --labels DIR` command's work (pair, read, count, report), without the ~3 s of
    Python start-up and imports."""
    from dlcvkit.runs.scoring import confusion_of_mask_files, iou_report

    preds, labels = eval_masks(cache, masks, size)

    def run() -> None:
        matrix, _ = confusion_of_mask_files(preds, labels)
        iou_report(matrix)

    timing: Timing = measure(run, items=masks, repeats=repeats, warmup=warmup, device=torch.device("cpu"))
    return [record(EVAL_BENCH, f"{masks} masks {size}x{size}", "dlcvkit", timing, masks=masks, img_size=size,
                   classes=NUM_CLASSES)]
