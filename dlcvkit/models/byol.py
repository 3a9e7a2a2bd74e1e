"""BYOL (Grill et al. 2020, "Bootstrap your own latent"): online network with predictor, target network by EMA.

Algorithm 1 of the paper, with the optimizer step and the target update left to the engine's loop:
    z₁, z₂   = g_θ(f_θ(v₁)), g_θ(f_θ(v₂))           online projections of the two views
    z′₁, z′₂ = g_ξ(f_ξ(v₁)), g_ξ(f_ξ(v₂))           target projections (no gradient)
    loss     = ℓ(q_θ(z₁), z′₂) + ℓ(q_θ(z₂), z′₁)     ℓ(p, z) = 2 − 2·cos(p, z)  (eq. 2, symmetrised)
    θ ← optimizer(θ, ∇_θ loss);  ξ ← τξ + (1 − τ)θ   (the task's EMA, after every optimizer step)
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from dlcvkit.models.backbones import create_backbone


def mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """BYOL's projector / predictor: Linear, BatchNorm, ReLU, Linear (§3.3: 4096 hidden, 256 out)."""
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features)
    )


def regression_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ℓ = ‖p/‖p‖ − z/‖z‖‖² = 2 − 2·cos(p, z) per sample (eq. 2); `b d` -> `b`."""
    return 2 - 2 * F.cosine_similarity(prediction, target.detach(), dim=-1)


class BYOL(nn.Module):
    """`online` = encoder f then projector g; `predictor` q; `target` = a copy of `online` that the optimizer
    never sees (no gradient) and that `dlcvkit.engine.ema.EMA(online, target, ...)` moves after each step.

    The target lives inside this module so that checkpoints, device moves and SyncBatchNorm conversion cover it;
    DDP leaves its parameters out of the gradient reduction (they do not require grad), so no
    `find_unused_parameters` is needed.
    """

    def __init__(self, encoder: nn.Module, projector: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.online = nn.Sequential(OrderedDict(encoder=encoder, projector=projector))
        self.predictor = predictor
        self.target = copy.deepcopy(self.online).requires_grad_(False)
        # The target normalises by batch statistics like the online network (it runs in train mode), but its
        # running statistics must be only the EMA of the online ones: momentum 0 keeps its forward from moving them.
        for module in self.target.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = 0.0

    @property
    def encoder(self) -> nn.Module:
        """The online encoder f_θ: what BYOL pre-trains for downstream use (never the target)."""
        return self.online.encoder

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of the symmetric loss; each view is normalised on its own, as in the paper."""
        p1, p2 = self.predictor(self.online(view1)), self.predictor(self.online(view2))
        with torch.no_grad():
            z1, z2 = self.target(view1), self.target(view2)
        return (regression_loss(p1, z2) + regression_loss(p2, z1)).mean()


def build_byol(
    backbone: str,
    pretrained: str = "",
    projection_hidden: int = 4096,
    projection_dim: int = 256,
    prediction_hidden: int = 4096,
) -> BYOL:
    """BYOL around a timm backbone by name (pooled features, its classifier removed)."""
    encoder = create_backbone(backbone, pretrained=pretrained, num_classes=0)
    return BYOL(
        encoder,
        mlp(encoder.num_features, projection_hidden, projection_dim),
        mlp(projection_dim, prediction_hidden, projection_dim),
    )
