"""Map-style datasets for the course layouts: P1 folders, Office-Home CSVs, image folders, P2 satellite pairs.

Each lists and validates its files once in `__init__` (sorted, deterministic) and raises DlcvkitError naming
the folder or file when the layout is wrong; `check()` then reads every file's header (nothing is decoded), so
that a run can refuse bad input before it creates anything. `__getitem__` runs in DataLoader workers: it
decodes and resizes to a fixed size and returns a dict of uint8 tensors and plain values, so the default
collate works. Augmentation is not done here: it runs on the device, on whole batches.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from csv import Error as CsvError
from csv import reader as csv_reader
from pathlib import Path

import torch
from torch.utils.data import Dataset

from dlcvkit.data.images import (IMAGE_SUFFIXES, image_header, is_image_file, read_image, read_resized, resize_image,
                                 resize_mask)
from dlcvkit.data.masks import OPTION, FormatSource, check_mask_mode, read_mask
from dlcvkit.errors import DlcvkitError

Size = int | tuple[int, int] | None

P1_NAME = re.compile(r"^(\d+)_(\d+)\.(png|jpg|jpeg)$", re.IGNORECASE)
CSV_COLUMNS = ("id", "filename", "label")
LAYOUTS = ("auto", "p1", "csv", "imagefolder")


def _folder(root: str | os.PathLike, what: str) -> Path:
    root = Path(root)
    if not root.exists():
        raise DlcvkitError(f"{what} {root} does not exist; check the path")
    if not root.is_dir():
        raise DlcvkitError(f"{what} {root} is not a folder; pass the folder that holds the images")
    return root


def _visible(root: Path) -> list[str]:
    """Sorted names of the entries of `root`, without hidden ones (.ipynb_checkpoints, .DS_Store)."""
    return sorted(name for name in os.listdir(root) if not name.startswith("."))


def _image_names(root: Path) -> list[str]:
    return [name for name in _visible(root) if is_image_file(name) and (root / name).is_file()]


def _load(path: Path, size: Size) -> torch.Tensor:
    return read_image(path) if size is None else read_resized(path, size)


Header = tuple[tuple[int, int], str]  # ((width, height), PIL mode) of an image file


class FileDataset(Dataset):
    """A dataset whose samples are image files: `files(i)` lists sample i's files, `label_source(i)` says where
    its label comes from (for messages), and `check()` reads every file's header before a run starts."""

    names: list[str]
    labels: list[int] | None = None

    def files(self, i: int) -> list[Path]:
        raise NotImplementedError

    def label_source(self, i: int) -> str:
        return str(self.files(i)[0])

    def headers(self, workers: int = 0) -> list[list[Header]]:
        """The header of every file of every sample (size and mode; nothing is decoded, so a whole data set
        takes seconds); an unreadable header is an error naming the file."""
        with ThreadPoolExecutor(max(1, workers)) as pool:  # file reads release the GIL
            return list(pool.map(lambda i: [image_header(path) for path in self.files(i)], range(len(self))))

    def check(self, workers: int = 0) -> list[tuple[int, int]]:
        """Read every header (see `headers`) and check what they tell; returns each sample's image size
        (width, height), for batching images of one size together."""
        headers = self.headers(workers)
        self.check_headers(headers)
        return [sample[0][0] for sample in headers]

    def check_headers(self, headers: list[list[Header]]) -> None:
        """What the layout requires of its files' sizes and modes (nothing but readable headers by default)."""


def _check_labels(dataset: FileDataset, num_classes: int | None) -> int:
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


class P1Folder(FileDataset):
    """Course P1: a flat folder of `{label}_{index}.png` files (the label is in the name)."""

    def __init__(self, root: str | os.PathLike, size: Size = None, num_classes: int | None = None):
        self.root = _folder(root, "P1 image folder")
        self.size = size
        images = _image_names(self.root)
        matches = [P1_NAME.match(name) for name in images]
        if not any(matches):
            raise DlcvkitError(f"no files named {{label}}_{{index}}.png in {self.root}; is it the P1 image folder?")
        for name, match in zip(images, matches):
            if match is None:
                raise DlcvkitError(
                    f"{name} in {self.root} is not named {{label}}_{{index}}.png like the other P1 images; "
                    "move it out of the folder or choose another layout"
                )
        found = sorted((int(match[1]), int(match[2]), match[0]) for match in matches)
        self.labels = [label for label, _, _ in found]
        self.names = [name for _, _, name in found]
        self.num_classes = _check_labels(self, num_classes)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        image = _load(self.root / self.names[i], self.size)
        return {"image": image, "label": self.labels[i], "name": self.names[i]}

    def files(self, i: int) -> list[Path]:
        return [self.root / self.names[i]]


class LabeledCsv(FileDataset):
    """Office-Home: a CSV `id,filename,label` naming files of `image_dir`; rows stay in CSV order.

    Without a `label` column, or with an empty one (an inference CSV), samples have no "label" and `labels` is None.
    """

    def __init__(
        self,
        csv_path: str | os.PathLike,
        image_dir: str | os.PathLike,
        size: Size = None,
        num_classes: int | None = None,
    ):
        self.csv_path = Path(csv_path)
        if not self.csv_path.is_file():
            raise DlcvkitError(f"CSV file {self.csv_path} does not exist; check the path")
        self.image_dir = _folder(image_dir, f"image folder of {self.csv_path.name},")
        self.size = size
        rows, has_label = self._read_rows()
        self.lines = [line for line, _, _, _ in rows]
        self.ids = [row_id for _, row_id, _, _ in rows]
        self.names = [name for _, _, name, _ in rows]
        # the course's test CSVs keep the label column but leave it empty: that is an inference CSV too
        if has_label and any(text for _, _, _, text in rows):
            self.labels = [self._parse_label(line, text) for line, _, _, text in rows]
            self.num_classes = _check_labels(self, num_classes)
        else:
            self.labels = None
            self.num_classes = num_classes

    def _read_rows(self) -> tuple[list[tuple[int, str, str, str]], bool]:
        """(line number, id, filename, label text) per data row, and whether there is a label column."""
        try:
            with open(self.csv_path, newline="", encoding="utf-8-sig") as f:
                reader = csv_reader(f)
                header = [column.strip() for column in next(reader, [])]
                for column in CSV_COLUMNS[:2]:
                    if column not in header:
                        raise DlcvkitError(
                            f"{self.csv_path} has no column {column!r} (header: {','.join(header) or 'empty'}); "
                            f"the header must be {','.join(CSV_COLUMNS)} (label optional for inference)"
                        )
                at = {column: header.index(column) for column in CSV_COLUMNS if column in header}
                rows = []
                for values in reader:
                    if not any(v.strip() for v in values):
                        continue  # blank line
                    line = reader.line_num
                    if len(values) < len(header):
                        raise DlcvkitError(
                            f"{self.csv_path} line {line} has {len(values)} fields, the header has {len(header)}; "
                            "fix that row"
                        )
                    label = values[at["label"]].strip() if "label" in at else ""
                    rows.append((line, values[at["id"]].strip(), values[at["filename"]].strip(), label))
        except (CsvError, UnicodeDecodeError) as e:
            raise DlcvkitError(f"cannot read CSV {self.csv_path}: {e}; is it a text CSV file?") from e
        if not rows:
            raise DlcvkitError(f"{self.csv_path} has a header but no rows; add rows id,filename,label")
        for line, _, name, _ in rows:
            if not (self.image_dir / name).is_file():
                raise DlcvkitError(
                    f"{self.csv_path} line {line} names {name!r}, which is not a file in {self.image_dir}; "
                    "fix the CSV or the image folder"
                )
        return rows, "label" in at

    def _parse_label(self, line: int, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise DlcvkitError(
                f"{self.csv_path} line {line} has label {text!r}, not an integer class id; fix that row"
            ) from None

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        sample = {"image": _load(self.image_dir / self.names[i], self.size), "name": self.names[i], "id": self.ids[i]}
        if self.labels is not None:
            sample["label"] = self.labels[i]
        return sample

    def files(self, i: int) -> list[Path]:
        return [self.image_dir / self.names[i]]

    def label_source(self, i: int) -> str:
        return f"{self.csv_path} line {self.lines[i]} ({self.names[i]})"


class UnlabeledFolder(FileDataset):
    """Every image directly in `root` (Mini-ImageNet `mini/train/*.jpg`, a test folder), sorted by name."""

    def __init__(self, root: str | os.PathLike, size: Size = None):
        self.root = _folder(root, "image folder")
        self.size = size
        self.names = _image_names(self.root)
        if not self.names:
            raise DlcvkitError(
                f"no images ({', '.join(IMAGE_SUFFIXES)}) directly in {self.root}; "
                "pass the folder that holds them"
            )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        return {"image": _load(self.root / self.names[i], self.size), "name": self.names[i]}

    def files(self, i: int) -> list[Path]:
        return [self.root / self.names[i]]


SAT_SUFFIX = "_sat.jpg"
MASK_SUFFIX = "_mask.png"


def _check_paired(root: Path, unpaired: list[str], suffix: str, partner: str) -> None:
    if unpaired:
        stem = unpaired[0]
        more = f" (and {len(unpaired) - 1} more)" if len(unpaired) > 1 else ""
        raise DlcvkitError(f"{stem}{suffix} in {root} has no {stem}{partner}{more}; add the partner or remove it")


class SatellitePairs(FileDataset):
    """Course P2: `xxxx_sat.jpg` + `xxxx_mask.png` pairs, matched by the `xxxx` stem.

    With `with_masks=False` (inference) only the `*_sat.jpg` files are needed and samples have no "mask".
    Masks are read by `dlcvkit.data.masks.read_mask` in `mask_format` ("colour" or "index").
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: Size = None,
        with_masks: bool = True,
        red_as: int | None = None,
        mask_format: str = "colour",
        format_source: FormatSource = OPTION,
    ):
        self.root = _folder(root, "satellite image folder")
        self.size = size
        self.with_masks = with_masks
        self.red_as = red_as
        self.mask_format = mask_format
        self.format_source = format_source  # where mask_format was chosen: what a refused mask's message names
        entries = _visible(self.root)
        sats = {name[: -len(SAT_SUFFIX)] for name in entries if name.endswith(SAT_SUFFIX)}
        masks = {name[: -len(MASK_SUFFIX)] for name in entries if name.endswith(MASK_SUFFIX)}
        if with_masks:
            _check_paired(self.root, sorted(sats - masks), SAT_SUFFIX, MASK_SUFFIX)
            _check_paired(self.root, sorted(masks - sats), MASK_SUFFIX, SAT_SUFFIX)
        if not sats:
            raise DlcvkitError(f"no xxxx{SAT_SUFFIX} (+ xxxx{MASK_SUFFIX}) files in {self.root}; is it a P2 folder?")
        self.names = sorted(sats)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        sat_path, *mask_path = self.files(i)
        image = read_image(sat_path)
        sample = {"name": self.names[i]}
        if mask_path:
            mask = read_mask(mask_path[0], red_as=self.red_as, mask_format=self.mask_format,
                             source=self.format_source)
            _check_pair_size(sat_path, (image.shape[2], image.shape[1]), mask_path[0], (mask.shape[1], mask.shape[0]))
            sample["mask"] = mask if self.size is None else resize_mask(mask, self.size)
        sample["image"] = image if self.size is None else resize_image(image, self.size)
        return sample

    def files(self, i: int) -> list[Path]:
        stem = self.names[i]
        return [self.root / f"{stem}{SAT_SUFFIX}"] + ([self.root / f"{stem}{MASK_SUFFIX}"] if self.with_masks else [])

    def check_headers(self, headers: list[list[Header]]) -> None:
        """Every mask has its image's size and a mode that `mask_format` reads."""
        if not self.with_masks:
            return
        for i, ((sat_size, _), (mask_size, mode)) in enumerate(headers):
            sat_path, mask_path = self.files(i)
            check_mask_mode(mask_path, mode, self.mask_format, self.format_source)
            _check_pair_size(sat_path, sat_size, mask_path, mask_size)


def _check_pair_size(sat_path: Path, sat_size, mask_path: Path, mask_size) -> None:
    """Image and mask of a pair must have one size (width, height)."""
    if tuple(sat_size) != tuple(mask_size):
        raise DlcvkitError(
            f"{sat_path.name} is {sat_size[0]}x{sat_size[1]} but {mask_path.name} is {mask_size[0]}x{mask_size[1]} "
            f"(width x height) in {sat_path.parent}; they must match"
        )


class ImageFolderDataset(FileDataset):
    """Class sub-folders of images: sorted folder names are the class ids 0..C-1 (`classes`)."""

    def __init__(self, root: str | os.PathLike, size: Size = None, num_classes: int | None = None):
        self.root = _folder(root, "image folder")
        self.size = size
        self.classes = [name for name in _visible(self.root) if (self.root / name).is_dir()]
        if not self.classes:
            raise DlcvkitError(f"no class sub-folders in {self.root}; expected ROOT/CLASS/IMAGE files")
        if num_classes is not None and num_classes != len(self.classes):
            raise DlcvkitError(
                f"{self.root} has {len(self.classes)} class folders but num_classes is {num_classes}; "
                "every class needs its folder (even in the validation set) so that ids line up"
            )
        self.names, self.labels = [], []
        for label, cls in enumerate(self.classes):
            files = _image_names(self.root / cls)
            if not files:
                raise DlcvkitError(f"class folder {self.root / cls} has no images; fill it or remove it")
            self.names += [f"{cls}/{name}" for name in files]
            self.labels += [label] * len(files)
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        image = _load(self.root / self.names[i], self.size)
        return {"image": image, "label": self.labels[i], "name": self.names[i]}

    def files(self, i: int) -> list[Path]:
        return [self.root / self.names[i]]

    def label_source(self, i: int) -> str:
        return f"class folder {self.root / self.classes[self.labels[i]]}"


PER_SAMPLE = ("names", "labels", "ids", "lines", "indices")  # the per-sample lists of the datasets (and subsets)


def drop_unreadable(dataset: FileDataset, what: str, workers: int = 0) -> list[Path]:
    """Decode every file of every sample of `dataset` (its `files(i)`) once and remove, in place, the samples
    with a file that does not decode; returns those files (an error if no sample is left: `what` names the
    option or folder). Behind `data.skip_bad` and `--skip-bad`: a few broken files in a large set need not stop
    a run, and every process of a run drops the same samples."""

    def unreadable(i: int) -> Path | None:
        for path in dataset.files(i):
            try:
                read_image(path)
            except DlcvkitError:
                return path
        return None

    with ThreadPoolExecutor(max(1, workers)) as pool:  # the decoders release the GIL
        bad = list(pool.map(unreadable, range(len(dataset))))
    kept = [i for i, path in enumerate(bad) if path is None]
    if not kept:
        raise DlcvkitError(f"{what}: no sample decodes (the first file: {bad[0]}); check the folder")
    if len(kept) < len(bad):
        for attr in PER_SAMPLE:
            values = getattr(dataset, attr, None)
            if values is not None:
                setattr(dataset, attr, [values[i] for i in kept])
    return [path for path in bad if path is not None]


def skip_unreadable(dataset: FileDataset, what: str, workers: int = 0) -> str:
    """`drop_unreadable`, reported: a one-line note on what was left out of `what` (an option or a folder)."""
    total = len(dataset)
    return f"{what}: {describe_skipped(drop_unreadable(dataset, what, workers), total)}"


def incomplete_output(skipped: list[Path], total: int, rest: str) -> DlcvkitError:
    """The error that ends a `--skip-bad` prediction which left images out: its output is incomplete, so the
    command must not report success; `rest` says where the other outputs are."""
    return DlcvkitError(f"{describe_skipped(skipped, total, 'images')}; the other {total - len(skipped)} {rest}")


def describe_skipped(skipped: list[Path], total: int, noun: str = "samples") -> str:
    """'skipped 2 of 5 samples that cannot be decoded: A, B' (the first three named), or 'all 5 samples decode'."""
    if not skipped:
        return f"all {total} {noun} decode"
    shown = ", ".join(map(str, skipped[:3])) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
    return f"skipped {len(skipped)} of {total} {noun} that cannot be decoded: {shown}"


def _has_csv_header(path: Path) -> bool:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = [column.strip() for column in next(csv_reader(f), [])]
    except (OSError, CsvError, UnicodeDecodeError):
        return False
    return "id" in header and "filename" in header


def open_labeled(
    path: str | os.PathLike,
    size: Size = None,
    layout: str = "auto",
    csv: str | os.PathLike | None = None,
    num_classes: int | None = None,
) -> P1Folder | LabeledCsv | ImageFolderDataset:
    """The labelled dataset at `path`, in `layout` "p1", "csv", "imagefolder" or "auto" (detected).

    auto: `csv` given -> LabeledCsv(csv, path); `path` is a .csv -> LabeledCsv with the sibling folder of the
    same stem (office/train.csv -> office/train/); image sub-folders -> ImageFolderDataset; folder X with a
    sibling X.csv of header id,filename,... -> LabeledCsv; `{int}_{int}.png|jpg` files -> P1Folder.
    The sibling CSV goes before P1 names because Office-Home files are named like `24_5.jpg` too.
    """
    path = Path(path)
    if layout not in LAYOUTS:
        raise DlcvkitError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    if not path.exists():
        raise DlcvkitError(f"data path {path} does not exist; check the path")
    if csv is not None:
        if layout not in ("auto", "csv"):
            raise DlcvkitError(f"a CSV ({csv}) was given with layout {layout!r}; use layout 'csv' or 'auto'")
        return LabeledCsv(csv, path, size, num_classes)
    if path.is_file():
        if path.suffix.lower() != ".csv" or layout not in ("auto", "csv"):
            raise DlcvkitError(f"{path} is a file; pass an image folder, or a .csv with layout 'csv' or 'auto'")
        return LabeledCsv(path, path.with_suffix(""), size, num_classes)
    sibling_csv = path.parent / f"{path.name}.csv"
    if layout == "p1":
        return P1Folder(path, size, num_classes)
    if layout == "imagefolder":
        return ImageFolderDataset(path, size, num_classes)
    if layout == "csv":
        if not sibling_csv.is_file():
            raise DlcvkitError(f"layout 'csv' needs a CSV: pass it, or put {sibling_csv.name} next to {path}")
        return LabeledCsv(sibling_csv, path, size, num_classes)

    entries = _visible(path)
    if not entries:
        raise DlcvkitError(f"data folder {path} is empty; pass the folder that holds the images")
    if any((path / name).is_dir() and _image_names(path / name) for name in entries):
        return ImageFolderDataset(path, size, num_classes)
    if sibling_csv.is_file() and _has_csv_header(sibling_csv):
        return LabeledCsv(sibling_csv, path, size, num_classes)
    if any(P1_NAME.match(name) for name in entries):
        return P1Folder(path, size, num_classes)
    raise DlcvkitError(
        f"cannot tell the layout of {path}: looked for an images CSV (id,filename,label; pass it or put "
        f"{sibling_csv.name} next to the folder), class sub-folders of images (imagefolder) and "
        "{label}_{index}.png files (p1); pass the layout explicitly"
    )
