"""Features of a trained model on a labelled dataset, for t-SNE pictures and probes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dlcvkit.augment.common import normalize, to_unit
from dlcvkit.config import DataConfig


@torch.inference_mode()
def extract_features(
    embed: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, data: DataConfig, device: torch.device | str
) -> tuple[np.ndarray, np.ndarray]:
    """(features (n d) float32, labels (n) int64) of a labelled dataset, in dataset order; `embed` maps normalised
    images (b 3 h w) to features and must already be in eval mode."""
    loader = DataLoader(dataset, batch_size=data.eval_batch_size or data.batch_size, num_workers=data.num_workers)
    features, labels = [], []
    for batch in loader:
        features.append(embed(normalize(to_unit(batch["image"].to(device)))).float().cpu())
        labels.append(batch["label"])
    return torch.cat(features).numpy(), torch.cat(labels).numpy()
