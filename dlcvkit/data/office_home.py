"""Office-Home: the images CSV `id,filename,label` naming the files of an image folder (`LabeledCsv`), and the
Office-Home folder, train/ + train.csv and val/ + val.csv side by side."""

from __future__ import annotations

import os
from collections.abc import Sequence
from csv import Error as CsvError
from csv import reader as csv_reader
from pathlib import Path

from dlcvkit.data.folders import Size, image_folder, load_image
from dlcvkit.data.samples import FileDataset, check_labels
from dlcvkit.errors import DlcvkitError

CSV_COLUMNS = ("id", "filename", "label")


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
        self.image_dir = image_folder(image_dir, f"image folder of {self.csv_path.name},")
        self.size = size
        rows, has_label = self._read_rows()
        self.lines = [line for line, _, _, _ in rows]
        self.ids = [row_id for _, row_id, _, _ in rows]
        self.names = [name for _, _, name, _ in rows]
        # the course's test CSVs keep the label column but leave it empty: that is an inference CSV too
        if has_label and any(text for _, _, _, text in rows):
            self.labels = [self._parse_label(line, text) for line, _, _, text in rows]
            self.num_classes = check_labels(self, num_classes)
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

    def __getitem__(self, i: int) -> dict:
        image = load_image(self.image_dir / self.names[i], self.size)
        sample = {"image": image, "name": self.names[i], "id": self.ids[i]}
        if self.labels is not None:
            sample["label"] = self.labels[i]
        return sample

    def files(self, i: int) -> list[Path]:
        return [self.image_dir / self.names[i]]

    def label_source(self, i: int) -> str:
        return f"{self.csv_path} line {self.lines[i]} ({self.names[i]})"

    def keep(self, kept: Sequence[int]) -> None:
        super().keep(kept)
        self.lines = [self.lines[i] for i in kept]


def has_csv_header(path: Path) -> bool:
    """Whether `path` reads as an images CSV: its header has the columns id and filename."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = [column.strip() for column in next(csv_reader(f), [])]
    except (OSError, CsvError, UnicodeDecodeError):
        return False
    return "id" in header and "filename" in header


def office_home_splits(root: str | Path) -> tuple[Path, Path] | None:
    """(root/train, root/val) when `root` is an Office-Home folder (train/ + train.csv, val/ + val.csv)."""
    root = Path(root)
    if all((root / f"{split}.csv").is_file() and (root / split).is_dir() for split in ("train", "val")):
        return root / "train", root / "val"
    return None
