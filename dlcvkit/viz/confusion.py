"""A confusion matrix as a picture: rows are labels, columns predictions, colour the fraction of each row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

ANNOTATE_UP_TO = 20  # counts written in the cells up to 20 classes; beyond, they would not fit


def plot_confusion(matrix, out: Path, *, class_names: list[str] | None = None, title: str = "") -> Path:
    """Write the C×C confusion `matrix` (counts) to the PNG `out`, each row normalised to sum to 1."""
    counts = np.asarray(matrix, dtype=np.int64)
    c = len(counts)
    rows = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    side = min(4 + 0.3 * c, 24)
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="fraction of the label's samples")
    names = class_names or [str(i) for i in range(c)]
    ticks = np.arange(c) if c <= 50 else np.arange(0, c, 5)
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize="small")
    ax.set_yticks(ticks, [names[i] for i in ticks], fontsize="small")
    ax.set_xlabel("prediction")
    ax.set_ylabel("label")
    if c <= ANNOTATE_UP_TO:
        for i in range(c):
            for j in range(c):
                if counts[i, j]:
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize="small",
                            color="white" if fractions[i, j] > 0.5 else "black")
    accuracy = np.trace(counts) / max(1, counts.sum())
    ax.set_title(title or f"confusion matrix (accuracy {accuracy:.4f}, {counts.sum()} samples)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
