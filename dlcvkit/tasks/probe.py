"""Evaluation of frozen features without fine-tuning: a linear probe and a k-nearest-neighbour vote.

Both run on features extracted once (no augmentation, backbone in eval mode), with scikit-learn:
- linear probe: multinomial logistic regression on standardised features (the usual SSL protocol, as a convex
  fit instead of SGD epochs, so the number does not depend on a training schedule);
- kNN: majority vote of the k = 20 nearest training samples by cosine similarity.
Backbone files (supervised, BYOL) are read here too, strictly, for the probe and for fine-tuning.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dlcvkit.augment.common import normalize, to_unit
from dlcvkit.config import DataConfig
from dlcvkit.engine.weights import load_weights, read_state_dict
from dlcvkit.errors import DlcvkitError
from dlcvkit.models.backbones import create_backbone

KNN_K = 20
# key prefixes under which other dlcvkit runs keep a backbone: a classifier's model.safetensors, a BYOL run's
FOREIGN_PREFIXES = ("backbone.", "online.encoder.")


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
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=min(k, len(train_x)), metric="cosine", algorithm="brute")
    knn.fit(train_x, train_y)
    return float(knn.score(val_x, val_y))


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a backbone file into a timm backbone built with `num_classes=0`, strictly.

    Accepts a torchvision- or timm-format state dict (.pt/.pth through `weights_only=True`, or safetensors;
    its ImageNet classifier is dropped), BYOL's `backbone.safetensors`, and the weights of a dlcvkit classifier
    or BYOL run (keys under FOREIGN_PREFIXES). timm's own file loading is not used because it turns strict
    checking off whenever the class count differs, so a file of another network would load nothing, silently.
    """
    state = read_state_dict(path)
    own = backbone.state_dict()
    if not own.keys() & state.keys():
        for prefix in FOREIGN_PREFIXES:
            if any(key.startswith(prefix) for key in state):
                state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
                break
    classifier = getattr(backbone, "pretrained_cfg", {}).get("classifier") or ()
    heads = tuple(f"{name}." for name in ((classifier,) if isinstance(classifier, str) else classifier))
    state = {k: v for k, v in state.items() if k in own or not k.startswith(heads)} if heads else state
    load_weights(backbone, state, source=f"backbone file {path}")


def backbone_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors backbone file (BYOL writes the timm name and the image size there)."""
    if Path(path).suffix != ".safetensors":
        return {}
    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


def open_backbone(path: str | Path | None, arch: str | None) -> tuple[nn.Module, str]:
    """(timm backbone with pooled outputs, its name): the file's weights, or random init without a file.
    The architecture is `arch`, else the one a BYOL file records."""
    name = arch or (backbone_metadata(path).get("backbone") if path else None)
    if not name:
        raise DlcvkitError(f"--backbone {path} does not record its architecture: pass --arch NAME (e.g. resnet50)")
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
