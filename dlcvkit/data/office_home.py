"""The Office-Home folder: train/ + train.csv and val/ + val.csv side by side."""

from __future__ import annotations

from pathlib import Path


def office_home_splits(root: str | Path) -> tuple[Path, Path] | None:
    """(root/train, root/val) when `root` is an Office-Home folder (train/ + train.csv, val/ + val.csv)."""
    root = Path(root)
    if all((root / f"{split}.csv").is_file() and (root / split).is_dir() for split in ("train", "val")):
        return root / "train", root / "val"
    return None
