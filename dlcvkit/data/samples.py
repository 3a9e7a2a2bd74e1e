"""The per-sample protocol that every dataset of `dlcvkit.data` honours, and what subsets, `drop_unreadable` and the
decoded-image cache rely on: of the `len(names)` samples, sample i has the name `names[i]`, the label `labels[i]`
(`labels` None: unlabelled), the id `ids[i]` (`ids` None: no ids) and the files `files(i)`; its dict holds
"name", "label" and "id" as `plain(i)` gives them, next to its tensors. `keep` removes samples, in place, from
every per-sample list.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from torch.utils.data import Dataset

from dlcvkit.data.images import image_header
from dlcvkit.errors import DlcvkitError

Header = tuple[tuple[int, int], str]  # ((width, height), PIL mode) of an image file


class FileDataset(Dataset):
    """A dataset whose samples are image files: `files(i)` lists sample i's files, `label_source(i)` says where
    its label comes from (for messages), and `check()` reads every file's header before a run starts."""

    names: list[str]
    labels: list[int] | None = None
    ids: list[str] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def files(self, i: int) -> list[Path]:
        raise NotImplementedError

    def label_source(self, i: int) -> str:
        return str(self.files(i)[0])

    def plain(self, i: int) -> dict:
        """The non-tensor values of sample `i`: what its dict holds besides tensors."""
        sample = {"name": self.names[i]}
        if self.labels is not None:
            sample["label"] = self.labels[i]
        if self.ids is not None:
            sample["id"] = self.ids[i]
        return sample

    def keep(self, kept: Sequence[int]) -> None:
        """Keep the samples `kept` only, in that order (a layout with more per-sample lists extends this)."""
        # a list that is None stays unset: the cache names a split by its settings, None ones included
        self.names = [self.names[i] for i in kept]
        if self.labels is not None:
            self.labels = [self.labels[i] for i in kept]
        if self.ids is not None:
            self.ids = [self.ids[i] for i in kept]

    def headers(self, workers: int = 0) -> list[list[Header]]:
        """The header of every file of every sample (size and mode; nothing is decoded, so a whole data set
        takes seconds); an unreadable header is an error naming the file."""
        with ThreadPoolExecutor(max(1, workers)) as pool:  # file reads release the GIL
            return list(pool.map(self.sample_headers, range(len(self))))

    def sample_headers(self, i: int) -> list[Header]:
        """The header of every file of sample `i`."""
        return [image_header(path) for path in self.files(i)]

    def check(self, workers: int = 0) -> list[tuple[int, int]]:
        """Read every header (see `headers`) and check what they tell; returns each sample's image size
        (width, height), for batching images of one size together."""
        headers = self.headers(workers)
        self.check_headers(headers)
        return [sample[0][0] for sample in headers]

    def check_headers(self, headers: list[list[Header]]) -> None:
        """What the layout requires of its files' sizes and modes (nothing but readable headers by default)."""


def check_labels(dataset: FileDataset, num_classes: int | None) -> int:
    """The number of classes: `num_classes` if given (every label must be below it), else max label + 1."""
    for i, label in enumerate(dataset.labels):
        if label < 0:
            raise DlcvkitError(f"{dataset.label_source(i)} has label {label}; class ids start at 0, fix the label")
    if num_classes is None:
        return max(dataset.labels) + 1
    for i, label in enumerate(dataset.labels):
        if label >= num_classes:
            raise DlcvkitError(
                f"{dataset.label_source(i)} has label {label}, outside 0..{num_classes - 1}; "
                f"fix the label or set model.num_classes to at least {label + 1}"
            )
    return num_classes


def classes_from_labels(dataset: FileDataset) -> int:
    """The number of classes C of training data whose recipe states none: its labels must be 0..C-1 with every
    class present, since a gap is a wrong label (9999 among 0..64) or a class missing from the data."""
    present = sorted(set(dataset.labels))
    gap = next((c for c, label in enumerate(present) if label != c), None)
    if gap is None:
        return len(present)
    above = present[gap]  # the smallest label past the gap: the one to look at
    i = dataset.labels.index(above)
    missing = f"{gap}" if above == gap + 1 else f"{gap}..{above - 1}"
    raise DlcvkitError(
        f"{dataset.label_source(i)} has label {above}, but no training sample has label {missing}: with "
        "model.num_classes = 0 the classes are 0..C-1, each present; fix the label, or set model.num_classes "
        "if the training data lacks classes"
    )
