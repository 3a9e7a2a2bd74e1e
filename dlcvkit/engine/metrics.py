"""Confusion matrices accumulated on the device and reduced once; accuracy and the course's mean IoU from them;
and the kNN vote on features that both the BYOL monitor and `dlcvkit eval probe` use.

Rows are labels, columns predictions. Every metric is a pure function of the matrix, so a distributed
evaluation is exact as long as each sample is counted once (see `dlcvkit.engine.sampling.EvalBatches`).
"""

from __future__ import annotations

from typing import Literal

import torch


class Confusion:
    """A C x C int64 confusion matrix on the device, updated per batch, summed across processes once; pixels
    labelled `ignore_index` (any value, a class id or not; None = none) are not counted."""

    def __init__(self, num_classes: int, device: torch.device | str = "cpu", ignore_index: int | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count (label, prediction) pairs of any shape with one `bincount` (values must lie in 0..C−1, labels
        may also be `ignore_index`: unchecked, since a check would cost a host sync per batch; the readers
        guarantee it)."""
        confusion_update(self.matrix, pred, target, self.ignore_index)

    def reduce(self, accelerator) -> torch.Tensor:
        """The matrix summed over all processes (one all-reduce)."""
        return accelerator.reduce(self.matrix, reduction="sum") if accelerator.num_processes > 1 else self.matrix


def confusion_update(matrix: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
                     ignore_index: int | None = None) -> None:
    """matrix[label, pred] += count, in place; pixels labelled `ignore_index` are left out."""
    c = matrix.shape[0]
    bins = c * c + (ignore_index is not None)  # ignored pixels fall in one more bin, dropped after the count
    # For C <= 15 the fused index label*C + pred fits in uint8: 8x less memory traffic than int64 before the
    # bincount (the bottleneck at 8 x 512 x 512 pixels); larger C needs a wider index.
    dtype = torch.uint8 if bins <= 256 else torch.int32 if bins < 2**31 else torch.int64
    index = target.reshape(-1).to(dtype) * c + pred.reshape(-1).to(dtype)
    if ignore_index is not None:
        # a bin of their own rather than a boolean selection, which would cost a host sync per batch
        index = torch.where(target.reshape(-1) == ignore_index, c * c, index)
    matrix += torch.bincount(index, minlength=bins)[: c * c].view(c, c)


def accuracy(matrix: torch.Tensor) -> float:
    """Fraction of samples on the diagonal."""
    total = int(matrix.sum())
    return float(matrix.diagonal().sum()) / total if total else float("nan")


def per_class_accuracy(matrix: torch.Tensor) -> torch.Tensor:
    """Recall of each class (NaN for a class with no samples)."""
    m = matrix.double()
    return m.diagonal() / m.sum(dim=1)


def iou_per_class(matrix: torch.Tensor, classes: int | None = None) -> torch.Tensor:
    """IoU_c = TP_c / (P_c + L_c − TP_c) for c < `classes`, counting over ALL rows and columns.

    This is the course's rule: a pixel labelled Unknown (6) and predicted c is a false positive of c, and a
    pixel labelled c predicted Unknown a false negative. A class absent from both labels and predictions
    gives 0/0 = NaN, as the course's script does.
    """
    m = matrix.double()
    tp = m.diagonal()
    union = m.sum(dim=0) + m.sum(dim=1) - tp
    iou = tp / union
    return iou[: classes if classes is not None else len(iou)]


def mean_iou(matrix: torch.Tensor, classes: int = 6, absent: Literal["nan", "skip"] = "nan") -> float:
    """The course's mean IoU: the mean of `iou_per_class` over classes 0..classes−1.

    A class in neither labels nor predictions has IoU 0/0 = NaN. absent="nan" keeps it, so the mean is NaN as in
    the course's script; "skip" averages the other classes (NaN if none is left), so that a small validation set
    still ranks checkpoints.
    """
    iou = iou_per_class(matrix, classes)
    kept = iou if absent == "nan" else iou[~iou.isnan()]
    return float(kept.mean()) if len(kept) else float("nan")


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor, k: int,
                chunk: int = 1024) -> torch.Tensor:
    """The label of each query (m d) by a majority vote of its `k` nearest bank samples (n d) by cosine
    similarity, ties to the smallest label (as scikit-learn's KNeighborsClassifier, metric="cosine")."""
    k, bank_labels = min(k, len(bank)), bank_labels.long()
    classes = int(bank_labels.max()) + 1
    bank = torch.nn.functional.normalize(bank.float(), dim=1)
    predictions = []
    for start in range(0, len(queries), chunk):  # an m x n similarity matrix at a time would not fit for big sets
        similarity = torch.nn.functional.normalize(queries[start:start + chunk].float(), dim=1) @ bank.T
        nearest = bank_labels[similarity.topk(k, dim=1).indices]  # m k
        votes = torch.zeros(len(nearest), classes, device=bank.device).scatter_add_(
            1, nearest, torch.ones_like(nearest, dtype=torch.float))
        predictions.append(votes.argmax(dim=1))  # the first maximum: the smallest label of a tie
    return torch.cat(predictions)
