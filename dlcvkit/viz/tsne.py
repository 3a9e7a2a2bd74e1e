"""2-D pictures of feature vectors (t-SNE or PCA from scikit-learn), coloured by class.

With more than 10 classes one scatter plot has too many similar colours to read, so the figure gets an
overview panel plus one panel per group of 10 classes (the other points in grey behind them), as the
reference reports drew their 50- and 65-class embeddings.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from dlcvkit.errors import DlcvkitError

CLASSES_PER_PANEL = 10  # tab10 has 10 clearly different colours
PCA_BEFORE_TSNE = 50  # t-SNE on 50 PCA components, as van der Maaten & Hinton (2008) do: faster, less noise
EXACT_TSNE_MAX = 200  # samples up to which t-SNE uses the exact gradient


def embed_2d(features: np.ndarray, method: str = "tsne", seed: int = 0) -> np.ndarray:
    """(n, d) features -> (n, 2) coordinates by t-SNE or PCA."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    features = np.asarray(features, dtype=np.float32)
    n = len(features)
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(features)
    if method != "tsne":
        raise DlcvkitError(f"--method {method!r}: expected 'tsne' or 'pca'")
    if features.shape[1] > PCA_BEFORE_TSNE and n > PCA_BEFORE_TSNE:
        features = PCA(n_components=PCA_BEFORE_TSNE, random_state=seed).fit_transform(features)
    perplexity = min(30.0, (n - 1) / 3)  # scikit-learn needs perplexity < n; 30 is its default
    # Barnes-Hut's approximation is coarse for a few dozen points (scikit-learn 1.9 put a point of a well
    # separated cluster next to another cluster); the exact gradient, O(n^2), is cheap at that size.
    method = "exact" if n <= EXACT_TSNE_MAX else "barnes_hut"
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                method=method).fit_transform(features)


def class_groups(classes: list[int]) -> list[list[int]]:
    """The classes in panels of CLASSES_PER_PANEL."""
    return [classes[i : i + CLASSES_PER_PANEL] for i in range(0, len(classes), CLASSES_PER_PANEL)]


def plot_embedding(
    features: np.ndarray,
    labels: np.ndarray,
    out: Path,
    *,
    method: str = "tsne",
    title: str = "",
    class_names: list[str] | None = None,
    seed: int = 0,
) -> Path:
    """Embed `features` (n, d) in 2-D and write a scatter plot coloured by `labels` (n,) to the PNG `out`."""
    features, labels, out = np.asarray(features), np.asarray(labels), Path(out)
    if features.ndim != 2 or labels.shape != (len(features),):
        raise DlcvkitError(f"t-SNE/PCA needs features (n, d) and labels (n,), got {features.shape} and {labels.shape}")
    if len(features) < 3:
        raise DlcvkitError(f"t-SNE/PCA needs at least 3 samples, got {len(features)}")
    classes = sorted(np.unique(labels).tolist())
    if class_names is not None and not 0 <= classes[0] <= classes[-1] < len(class_names):
        raise DlcvkitError(
            f"labels {classes[0]}..{classes[-1]} do not all have a name among {len(class_names)} class names"
        )
    points = embed_2d(features, method, seed)
    groups = class_groups(classes) if len(classes) > CLASSES_PER_PANEL else []
    panels = 1 + len(groups)
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(6 * cols, 5.5 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    name = (lambda c: class_names[c]) if class_names else str

    if groups:  # overview: one colour per class from a continuous map, no legend (it would not be readable)
        axes[0].scatter(points[:, 0], points[:, 1], c=labels, cmap="nipy_spectral", s=4)
        axes[0].set_title(f"all {len(classes)} classes")
        for ax, group in zip(axes[1:], groups):
            _scatter_classes(ax, points, labels, group, name)
            ax.set_title(f"classes {name(group[0])} … {name(group[-1])}")
    else:
        _scatter_classes(axes[0], points, labels, classes, name)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[panels:]:
        ax.set_visible(False)
    fig.suptitle(title or f"{method.upper() if method == 'pca' else 't-SNE'} of {len(features)} samples")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def _scatter_classes(ax, points: np.ndarray, labels: np.ndarray, group: list[int], name) -> None:
    """`group`'s points in tab10 colours with a legend, every other point in light grey behind them."""
    others = ~np.isin(labels, group)
    if others.any():
        ax.scatter(points[others, 0], points[others, 1], c="0.85", s=3)
    colours = [f"C{i}" for i in range(CLASSES_PER_PANEL)]
    for colour, c in zip(colours, group):
        mine = labels == c
        ax.scatter(points[mine, 0], points[mine, 1], color=colour, s=6, label=name(c))
    ax.legend(markerscale=2, fontsize="small", loc="best")
