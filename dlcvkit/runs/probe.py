"""Evaluation of frozen features without fine-tuning: a linear probe and a k-nearest-neighbour vote.

Both run on features extracted once (no augmentation, backbone in eval mode), with scikit-learn:
- linear probe: multinomial logistic regression on standardised features (the usual SSL protocol, as a convex
  fit instead of SGD epochs, so the number does not depend on a training schedule);
- kNN: majority vote of the k = 20 nearest training samples by cosine similarity (the vote BYOL's monitor
  takes during training, dlcvkit.engine.metrics.knn_predict).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from accelerate.utils import set_seed
from torch.utils.data import Dataset

from dlcvkit.config import DataConfig
from dlcvkit.data.labeled import open_labeled
from dlcvkit.engine.distributed import pick_device
from dlcvkit.engine.metrics import knn_predict
from dlcvkit.errors import DlcvkitError
from dlcvkit.models.backbones import backbone_metadata, create_backbone, load_backbone_weights
from dlcvkit.engine.features import extract_features
from dlcvkit.runs.load import eval_data
from dlcvkit.data.office_home import office_home_splits

KNN_K = 20


def linear_probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray) -> float:
    """Validation accuracy of logistic regression fitted on the standardised training features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(train_x, train_y)
    return float(probe.score(val_x, val_y))


def knn_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, k: int = KNN_K
) -> float:
    """Validation accuracy of a majority vote of the `k` nearest training samples by cosine similarity."""
    predicted = knn_predict(torch.as_tensor(train_x), torch.as_tensor(train_y), torch.as_tensor(val_x), k)
    return float((predicted.numpy() == np.asarray(val_y)).mean())


def open_backbone(path: str | Path | None, arch: str | None) -> tuple[nn.Module, str]:
    """(timm backbone with pooled outputs, its name): the file's weights, or random init without a file.
    The architecture is `arch`, else the one a BYOL file records."""
    name = arch or (backbone_metadata(path).get("backbone") if path else None)
    if not name:
        raise DlcvkitError(f"--backbone {path} does not record its architecture: pass --model NAME (e.g. resnet50)")
    backbone = create_backbone(name, num_classes=0)
    if path:
        load_backbone_weights(backbone, path)
    return backbone.eval(), name


def probe_features(
    backbone: nn.Module, train_set: Dataset, val_set: Dataset, data: DataConfig, device: torch.device | str, k: int = KNN_K
) -> dict[str, float]:
    """Linear-probe and kNN validation accuracy of a frozen backbone's features."""
    backbone = backbone.to(device).eval()
    train_x, train_y = extract_features(backbone, train_set, data, device)
    val_x, val_y = extract_features(backbone, val_set, data, device)
    return {
        "linear_probe_acc": linear_probe_accuracy(train_x, train_y, val_x, val_y),
        "knn_acc": knn_accuracy(train_x, train_y, val_x, val_y, k),
    }


def probe_backbone(data: str | Path, backbone: Path | None = None, *, val: str | Path | None = None,
                   arch: str | None = None, img_size: int = 0, k: int = KNN_K, batch_size: int = 0,
                   num_workers: int = -1, seed: int = 0) -> dict:
    """`probe_features` of a backbone file (random init with `seed` without one) on an Office-Home folder, or on
    `data` and `val`; images at `img_size` (0: the BYOL file's pre-training size, else 128); `batch_size` 0 and
    `num_workers` -1: the recipe defaults."""
    if val is None:
        splits = office_home_splits(data)
        if splits is None:
            raise DlcvkitError(f"--data {data} is not an Office-Home folder (train/ + train.csv, val/ + val.csv); "
                               "pass the training data with --val VAL")
        data, val = splits
    size = img_size or int(backbone_metadata(backbone).get("img_size", 128) if backbone else 128)
    set_seed(seed)
    net, name = open_backbone(backbone, arch)
    train_set = open_labeled(data, size=size)
    val_set = open_labeled(val, size=size, num_classes=train_set.num_classes)
    loading = eval_data(DataConfig(), batch_size, num_workers)
    result = probe_features(net, train_set, val_set, loading, pick_device(), k)
    return result | {"backbone": str(backbone) if backbone else f"random init (seed {seed})", "arch": name,
                     "img_size": size, "train": len(train_set), "val": len(val_set), "k": k}
