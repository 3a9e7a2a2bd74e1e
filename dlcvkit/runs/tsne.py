"""`dlcvkit tsne`: a 2-D picture (t-SNE or PCA) of a classification run's features, coloured by class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Subset

from dlcvkit.data.labeled import open_labeled
from dlcvkit.engine.distributed import pick_device
from dlcvkit.errors import DlcvkitError
from dlcvkit.runs.ensemble import load_members
from dlcvkit.engine.features import extract_features
from dlcvkit.runs.load import eval_data
from dlcvkit.viz.tsne import plot_embedding


def plot_run_features(run: Path, data: Path, out: Path, *, csv: Path | None = None, layout: str = "auto",
                      layer: str = "penultimate", method: str = "tsne", weights: str = "best", max_samples: int = 0,
                      seed: int = 0, batch_size: int = 0, num_workers: int = -1) -> Path:
    """Write the picture of the features at `layer` ("penultimate": the last linear layer's input; "backbone":
    the backbone's pooled output) of labelled images, at most `max_samples` evenly spaced ones (0 = all)."""
    device = pick_device()
    member = load_members([run], weights, device)[0]
    model = member.model
    dataset = open_labeled(data, member.recipe.data.img_size, layout, csv,
                           num_classes=model.head[-1].out_features)
    if dataset.labels is None:
        raise DlcvkitError(f"--data {data}: the pictures are coloured by class, but this CSV has no labels")
    chosen = np.arange(len(dataset))
    if 0 < max_samples < len(dataset):
        chosen = np.linspace(0, len(dataset) - 1, max_samples).round().astype(int)
    embed = model.features if layer == "penultimate" else model.backbone_features
    features, labels = extract_features(embed, Subset(dataset, chosen.tolist()),
                                        eval_data(member.recipe.data, batch_size, num_workers), device)
    return plot_embedding(features, labels, out, method=method, seed=seed,
                          class_names=getattr(dataset, "classes", None),
                          title=f"{method.upper() if method == 'pca' else 't-SNE'} of the {layer} features of "
                                f"{run.name} ({len(chosen)} images)")
