"""Class-balanced subsets of a labelled set, fixed by a seed: the small exports of `dlcvkit data export` and the
labelled fraction of semi-supervised fine-tuning (BYOL paper, Table 2: 1% and 10% of the labels)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dlcvkit.data.samples import FileDataset
from dlcvkit.errors import DlcvkitError


def balanced_indices(labels: Sequence[int], *, fraction: float | None = None, per_class: int | None = None,
                     seed: int = 0, option: str = "--fraction") -> list[int]:
    """Sorted indices of a subset with `per_class` samples of each class, or `fraction` of each class (rounded,
    at least one): each class's share drawn without replacement by `seed`. Neither given: every index."""
    labels = np.asarray(labels)
    if fraction is not None and per_class is not None:
        raise DlcvkitError("--fraction and --per-class both choose the subset's size; pass one")
    if fraction is not None and not 0 < fraction <= 1:
        raise DlcvkitError(f"{option} must be in (0, 1], got {fraction}")
    if per_class is not None and per_class < 1:
        raise DlcvkitError(f"--per-class must be at least 1, got {per_class}")
    if fraction is None and per_class is None:
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = per_class if per_class is not None else max(1, round(fraction * len(members)))
        if take > len(members):
            raise DlcvkitError(f"--per-class {per_class}: class {label} has only {len(members)} samples; "
                               "ask for fewer")
        chosen.append(rng.permutation(members)[:take])
    return sorted(int(i) for i in np.concatenate(chosen))


class LabelSubset(FileDataset):
    """The samples `indices` of a labelled file dataset, as a file dataset itself (checks, caches and messages
    see the chosen files only)."""

    def __init__(self, dataset: FileDataset, indices: Sequence[int]) -> None:
        # the dataset's per-sample lists and all its samples, then cut down to `indices`
        self.dataset, self.indices, self.names = dataset, list(range(len(dataset))), dataset.names
        if dataset.labels is not None:
            self.labels = dataset.labels
        if dataset.ids is not None:
            self.ids = dataset.ids
        self.keep(indices)

    def __getitem__(self, i: int) -> dict:
        return self.dataset[self.indices[i]]

    def files(self, i: int) -> list[Path]:
        return self.dataset.files(self.indices[i])

    def label_source(self, i: int) -> str:
        return self.dataset.label_source(self.indices[i])

    def keep(self, kept: Sequence[int]) -> None:
        super().keep(kept)
        self.indices = [self.indices[i] for i in kept]

    def check_headers(self, headers) -> None:
        self.dataset.check_headers(headers)
