"""Image classifiers: a timm backbone's pooled features followed by a linear or MLP head."""

from __future__ import annotations

import torch
from torch import nn

from dlcvkit.models.backbones import create_backbone


def build_head(in_features: int, num_classes: int, hidden: list[int] = (), dropout: float = 0.0) -> nn.Sequential:
    """Linear head, or an MLP `in -> hidden[0] -> ... -> num_classes` with ReLU and dropout between layers."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(width, h), nn.ReLU(inplace=True)] if dropout else \
                  [nn.Linear(width, h), nn.ReLU(inplace=True)]
        width = h
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class Classifier(nn.Module):
    """`head(backbone(x))`; `features(x)` is the input of the last linear layer (the penultimate features).

    With `freeze_backbone` the backbone gets no gradient and stays in eval mode even in `train()`, so its
    BatchNorm statistics stay those of its pre-training (a linear probe of frozen features).
    """

    def __init__(self, backbone: nn.Module, head: nn.Sequential, freeze_backbone: bool = False) -> None:
        super().__init__()
        self.backbone, self.head, self.freeze_backbone = backbone, head, freeze_backbone
        if freeze_backbone:
            backbone.requires_grad_(False)
            backbone.eval()

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head[:-1](self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_classifier(
    backbone: str,
    num_classes: int,
    hidden: list[int] = (),
    dropout: float = 0.0,
    pretrained: str = "",
    freeze_backbone: bool = False,
) -> Classifier:
    """A timm backbone by name (pooled features, its own classifier removed) with a fresh head."""
    net = create_backbone(backbone, pretrained=pretrained, num_classes=0)
    return Classifier(net, build_head(net.num_features, num_classes, list(hidden), dropout), freeze_backbone)
