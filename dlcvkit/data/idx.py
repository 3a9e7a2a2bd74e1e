"""The IDX files of the MNIST family (MNIST, Fashion-MNIST, KMNIST, EMNIST): read them, gzip or not, and
write the P1 layout plus the CSV layout, for real-data checks (`dlcvkit data export idx|fashion-mnist`).

IDX (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type byte, the number of dimensions,
then each dimension as a big-endian int32, then the values in C order, big-endian.
"""

from __future__ import annotations

import csv
import gzip
import os
import struct
from pathlib import Path

import numpy as np
import torch

from dlcvkit.data.images import write_image
from dlcvkit.data.subset import balanced_indices
from dlcvkit.errors import DlcvkitError
from dlcvkit.outputs import prepare_output_dir

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"
SPLITS = {"train": "train", "val": "t10k"}  # our split -> the IDX files' prefix (the MNIST test set is val/)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array an IDX file holds (gzip-compressed or not), in native byte order."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise DlcvkitError(f"{path} is a damaged gzip file ({error}); download it again") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_TYPES:
        raise DlcvkitError(f"{path} is not an IDX file (its first bytes are not 0 0 TYPE NDIM); pass the "
                           "MNIST-format image and label files")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header]) if len(raw) >= header else None
    dtype = np.dtype(IDX_TYPES[raw[2]])
    if dims is None or len(raw) - header != int(np.prod(dims)) * dtype.itemsize:
        raise DlcvkitError(f"{path} is truncated or longer than its header says; download it again")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool = False) -> None:
    """Write `array` (uint8, int8, int16, int32, float32 or float64) as an IDX file (gzip with `compress`)."""
    codes = {np.dtype(name).newbyteorder("="): c for c, name in IDX_TYPES.items()}
    if array.dtype not in codes:
        raise DlcvkitError(f"IDX files hold no {array.dtype} values; convert the array to one of {list(codes)}")
    code = codes[array.dtype]
    data = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    data += np.ascontiguousarray(array).astype(IDX_TYPES[code]).tobytes()
    Path(path).write_bytes(gzip.compress(data) if compress else data)


def find_idx(folder: Path, prefix: str, kind: str) -> Path:
    """The `{prefix}-{kind}` IDX file of `folder` under its usual names (`train-images-idx3-ubyte[.gz]`,
    `train-images.idx3-ubyte`, ...)."""
    found = sorted(p for p in folder.glob(f"{prefix}-{kind}[-.]idx*-ubyte*") if p.is_file())
    if not found:
        raise DlcvkitError(f"--from {folder} has no {prefix}-{kind}-idx*-ubyte[.gz] file; pass the folder of "
                           "the MNIST-format files (train-images, train-labels, t10k-images, t10k-labels)")
    return found[0]


def read_split(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """(images n h w uint8, labels n) of one split's pair of IDX files."""
    image_file, label_file = find_idx(folder, prefix, "images"), find_idx(folder, prefix, "labels")
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DlcvkitError(f"{image_file} holds {images.dtype} values of shape {images.shape}; expected grey "
                           "uint8 images (n, height, width)")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DlcvkitError(f"{label_file} holds {labels.shape} labels for the {len(images)} images of "
                           f"{image_file}; the two files must come from the same split")
    return images, labels.astype(np.int64)


def export_idx(source: str | os.PathLike, out: str | os.PathLike, *, fraction: float | None = None,
               per_class: int | None = None, seed: int = 0, overwrite: bool = False) -> str:
    """Write the train and t10k splits of `source` as `out/train/` and `out/val/` of `{label}_{index}.png`
    (grey PNGs; `index` is the image's position in its IDX file) and `out/train.csv`, `out/val.csv`
    (`id,filename,label`, the CSV layout of the same files); optionally a class-balanced subset of each split
    (`fraction` or `per_class`, drawn by `seed`). Returns a one-line summary."""
    source = Path(source)
    if not source.is_dir():
        raise DlcvkitError(f"--from {source} is not a folder; pass the folder of the IDX files")
    splits = {split: read_split(source, prefix) for split, prefix in SPLITS.items()}  # all read before writing
    chosen = {split: balanced_indices(labels, fraction=fraction, per_class=per_class, seed=seed)
              for split, (_, labels) in splits.items()}
    out = prepare_output_dir(Path(out), "--out", overwrite, {"--from": source})
    for split, (images, labels) in splits.items():
        rows = []
        for i in chosen[split]:
            name = f"{labels[i]}_{i}.png"
            write_image(out / split / name, torch.from_numpy(images[i])[None])
            rows.append((len(rows), name, int(labels[i])))
        with open(out / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(("id", "filename", "label"))
            writer.writerows(rows)
    images = splits["train"][0]
    classes = len(np.unique(splits["train"][1]))
    return (f"wrote {len(chosen['train'])} train + {len(chosen['val'])} val {images.shape[2]}x{images.shape[1]} "
            f"grey PNG images of {classes} classes (train/, val/ named {{label}}_{{index}}.png; train.csv, val.csv) "
            f"to {out}")
