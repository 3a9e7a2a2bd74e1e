"""scikit-learn's handwritten digits (UCI optdigits: 1,797 8×8 grey images, 10 classes; shipped with scikit-learn,
no download) written in the course's P1 layout, for checking on real data that classification learns."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from dlcvkit.data.images import write_image
from dlcvkit.errors import DlcvkitError
from dlcvkit.outputs import prepare_output_dir


def export_digits(out: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0, *, overwrite: bool = False) -> str:
    """Write `out/train/` and `out/val/` of `{label}_{index}.png` (8×8 grey, 0..16 scaled to 0..255), split
    stratified by class with `seed`. Returns a one-line summary."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0 < val_fraction < 1:
        raise DlcvkitError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    out = prepare_output_dir(Path(out), "--out", overwrite)
    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # the data set's values are 0..16
    train, val = train_test_split(np.arange(len(pixels)), test_size=val_fraction, stratify=digits.target,
                                  random_state=seed)
    for split, chosen in (("train", train), ("val", val)):
        seen = np.zeros(10, dtype=int)
        for i in sorted(chosen):
            label = int(digits.target[i])
            write_image(out / split / f"{label}_{seen[label]}.png", torch.from_numpy(pixels[i])[None])
            seen[label] += 1
    return (f"wrote {len(train)} train + {len(val)} val 8x8 PNG images of 10 digit classes "
            f"(train/, val/; P1 layout {{label}}_{{index}}.png) to {out}")
