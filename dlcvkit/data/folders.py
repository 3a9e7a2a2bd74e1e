"""Image folders as the layouts find them: a checked folder, its visible entries and images, an image read at a
size; and the plainest layout, an unlabelled folder of images."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dlcvkit.data.images import IMAGE_SUFFIXES, is_image_file, read_image, read_resized
from dlcvkit.data.samples import FileDataset
from dlcvkit.errors import DlcvkitError

Size = int | tuple[int, int] | None


def image_folder(root: str | os.PathLike, what: str) -> Path:
    """`root` as a Path, if it is a folder; else an error naming it as `what`."""
    root = Path(root)
    if not root.exists():
        raise DlcvkitError(f"{what} {root} does not exist; check the path")
    if not root.is_dir():
        raise DlcvkitError(f"{what} {root} is not a folder; pass the folder that holds the images")
    return root


def visible(root: Path) -> list[str]:
    """Sorted names of the entries of `root`, without hidden ones (.ipynb_checkpoints, .DS_Store)."""
    return sorted(name for name in os.listdir(root) if not name.startswith("."))


def image_names(root: Path) -> list[str]:
    """Sorted names of the image files directly in `root` (not hidden)."""
    return [name for name in visible(root) if is_image_file(name) and (root / name).is_file()]


def load_image(path: Path, size: Size) -> torch.Tensor:
    """The image at `path`, uint8 `3 h w`, resized to `size` unless None."""
    return read_image(path) if size is None else read_resized(path, size)


class UnlabeledFolder(FileDataset):
    """Every image directly in `root` (Mini-ImageNet `mini/train/*.jpg`, a test folder), sorted by name."""

    def __init__(self, root: str | os.PathLike, size: Size = None):
        self.root = image_folder(root, "image folder")
        self.size = size
        self.names = image_names(self.root)
        if not self.names:
            raise DlcvkitError(
                f"no images ({', '.join(IMAGE_SUFFIXES)}) directly in {self.root}; "
                "pass the folder that holds them"
            )

    def __getitem__(self, i: int) -> dict:
        return {"image": load_image(self.root / self.names[i], self.size), "name": self.names[i]}

    def files(self, i: int) -> list[Path]:
        return [self.root / self.names[i]]
