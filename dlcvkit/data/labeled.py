"""The labelled classification layouts: course P1 folders of `{label}_{index}.png` files, class sub-folders
(ImageFolder) and Office-Home CSVs (`office_home.LabeledCsv`); `open_labeled` tells them apart."""

from __future__ import annotations

import os
import re
from pathlib import Path

from dlcvkit.data.folders import Size, image_folder, image_names, load_image, visible
from dlcvkit.data.office_home import LabeledCsv, has_csv_header
from dlcvkit.data.samples import FileDataset, check_labels
from dlcvkit.errors import DlcvkitError

P1_NAME = re.compile(r"^(\d+)_(\d+)\.(png|jpg|jpeg)$", re.IGNORECASE)
LAYOUTS = ("auto", "p1", "csv", "imagefolder")


class P1Folder(FileDataset):
    """Course P1: a flat folder of `{label}_{index}.png` files (the label is in the name)."""

    def __init__(self, root: str | os.PathLike, size: Size = None, num_classes: int | None = None):
        self.root = image_folder(root, "P1 image folder")
        self.size = size
        images = image_names(self.root)
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
        self.num_classes = check_labels(self, num_classes)

    def __getitem__(self, i: int) -> dict:
        image = load_image(self.root / self.names[i], self.size)
        return {"image": image, "label": self.labels[i], "name": self.names[i]}

    def files(self, i: int) -> list[Path]:
        return [self.root / self.names[i]]


class ImageFolderDataset(FileDataset):
    """Class sub-folders of images: sorted folder names are the class ids 0..C-1 (`classes`)."""

    def __init__(self, root: str | os.PathLike, size: Size = None, num_classes: int | None = None):
        self.root = image_folder(root, "image folder")
        self.size = size
        self.classes = [name for name in visible(self.root) if (self.root / name).is_dir()]
        if not self.classes:
            raise DlcvkitError(f"no class sub-folders in {self.root}; expected ROOT/CLASS/IMAGE files")
        if num_classes is not None and num_classes != len(self.classes):
            raise DlcvkitError(
                f"{self.root} has {len(self.classes)} class folders but num_classes is {num_classes}; "
                "every class needs its folder (even in the validation set) so that ids line up"
            )
        self.names, self.labels = [], []
        for label, cls in enumerate(self.classes):
            files = image_names(self.root / cls)
            if not files:
                raise DlcvkitError(f"class folder {self.root / cls} has no images; fill it or remove it")
            self.names += [f"{cls}/{name}" for name in files]
            self.labels += [label] * len(files)
        self.num_classes = len(self.classes)

    def __getitem__(self, i: int) -> dict:
        image = load_image(self.root / self.names[i], self.size)
        return {"image": image, "label": self.labels[i], "name": self.names[i]}

    def files(self, i: int) -> list[Path]:
        return [self.root / self.names[i]]

    def label_source(self, i: int) -> str:
        return f"class folder {self.root / self.classes[self.labels[i]]}"



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

    entries = visible(path)
    if not entries:
        raise DlcvkitError(f"data folder {path} is empty; pass the folder that holds the images")
    if any((path / name).is_dir() and image_names(path / name) for name in entries):
        return ImageFolderDataset(path, size, num_classes)
    if sibling_csv.is_file() and has_csv_header(sibling_csv):
        return LabeledCsv(sibling_csv, path, size, num_classes)
    if any(P1_NAME.match(name) for name in entries):
        return P1Folder(path, size, num_classes)
    raise DlcvkitError(
        f"cannot tell the layout of {path}: looked for an images CSV (id,filename,label; pass it or put "
        f"{sibling_csv.name} next to the folder), class sub-folders of images (imagefolder) and "
        "{label}_{index}.png files (p1); pass the layout explicitly"
    )
