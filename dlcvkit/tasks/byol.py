"""BYOL (Grill et al. 2020, "Bootstrap your own latent"): online network with predictor, target network by EMA.

Algorithm 1 of the paper, with the optimizer step and the target update left to the engine's loop:
    z₁, z₂   = g_θ(f_θ(v₁)), g_θ(f_θ(v₂))           online projections of the two views
    z′₁, z′₂ = g_ξ(f_ξ(v₁)), g_ξ(f_ξ(v₂))           target projections (no gradient)
    loss     = ℓ(q_θ(z₁), z′₂) + ℓ(q_θ(z₂), z′₁)     ℓ(p, z) = 2 − 2·cos(p, z)  (eq. 2, symmetrised)
    θ ← optimizer(θ, ∇_θ loss);  ξ ← τξ + (1 − τ)θ   (the EMA teacher of dlcvkit.tasks.ssl, after every step)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dlcvkit.augment.views import GREY_JITTER, Views, compile_colour_jitter, paper_view, report_view
from dlcvkit.models.backbones import create_backbone
from dlcvkit.tasks.ssl import SslModel, SslRecipe, SslTask, frozen_copy


@dataclass
class ByolModel(SslModel):
    projection_hidden: int = 4096  # projector g and predictor q: Linear, BN, ReLU, Linear (paper §3.3)
    projection_dim: int = 256
    prediction_hidden: int = 4096
    tau_base: float = 0.996  # target EMA τ at step 0, rising to 1 by a cosine over the run (§3.2; 0.99 for short runs)


@dataclass
class ByolAug:
    # paper: Table 6's two asymmetric views; paper_gray: the same, every view grayscale (for data whose colours are
    # random per image, such as `dlcvkit data synth`, where the palette alone tells the images apart and BYOL learns
    # it instead of shapes); grey: for grey images such as Fashion-MNIST, the paper's views with brightness and
    # contrast jitter only, crops of at least 20%; report: the lighter pipeline of the course's reference report
    # (lucidrains' byol-pytorch defaults); none: both views = the image (checks without randomness)
    preset: Literal["paper", "paper_gray", "grey", "report", "none"] = "paper"
    # torch.compile kornia's colour jitter (the same random draws): faster views on the CPU after a one-off
    # compile of 10-50 s (needs a C compiler); see dlcvkit.augment.views.compile_colour_jitter
    compile: bool = False


@dataclass
class ByolRecipe(SslRecipe):
    task: str = "byol"
    model: ByolModel = field(default_factory=ByolModel)
    aug: ByolAug = field(default_factory=ByolAug)


def byol_views(preset: str, size: int, compile: bool = False) -> Views:
    """The two views of a preset (see `ByolAug.preset`), `size` x `size`; `compile`: see `compile_colour_jitter`."""
    if preset in ("paper", "paper_gray"):
        gray = 1.0 if preset == "paper_gray" else 0.2
        views = Views((1, paper_view(size, blur_p=1.0, solarize_p=0.0, grayscale_p=gray)),
                      (1, paper_view(size, blur_p=0.1, solarize_p=0.2, grayscale_p=gray)))
    elif preset == "grey":
        # grey images (Fashion-MNIST) fill most of their small frame: crops of at least 20% keep an object
        # recognisable at 28-32 px, where 8% of the area is a few pixels across
        views = Views((1, paper_view(size, 1.0, 0.0, 0.0, GREY_JITTER, scale=(0.2, 1.0))),
                      (1, paper_view(size, 0.1, 0.2, 0.0, GREY_JITTER, scale=(0.2, 1.0))))
    elif preset == "report":
        views = Views((1, report_view(size)), (1, report_view(size)))
    elif preset == "none":
        views = Views((1, nn.Identity()), (1, nn.Identity()))
    else:
        raise ValueError(f"unknown BYOL augmentation preset {preset!r}")
    return compile_colour_jitter(views) if compile else views


def mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    """BYOL's projector / predictor: Linear, BatchNorm, ReLU, Linear (§3.3: 4096 hidden, 256 out)."""
    return nn.Sequential(
        nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features)
    )


def regression_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """ℓ = ‖p/‖p‖ − z/‖z‖‖² = 2 − 2·cos(p, z) per sample (eq. 2); `b d` -> `b`."""
    return 2 - 2 * F.cosine_similarity(prediction, target.detach(), dim=-1)


class BYOL(nn.Module):
    """`online` = encoder f then projector g; `predictor` q; `target` = the EMA teacher of `online`.

    The target lives inside this module so that checkpoints, device moves and SyncBatchNorm conversion cover it;
    DDP leaves its parameters out of the gradient reduction (they do not require grad), so no
    `find_unused_parameters` is needed.
    """

    def __init__(self, encoder: nn.Module, projector: nn.Module, predictor: nn.Module) -> None:
        super().__init__()
        self.online = nn.Sequential(OrderedDict(encoder=encoder, projector=projector))
        self.predictor = predictor
        self.target = frozen_copy(self.online)

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


def build_byol(backbone: str, pretrained: str = "", projection_hidden: int = 4096, projection_dim: int = 256,
               prediction_hidden: int = 4096) -> BYOL:
    """BYOL around a timm backbone by name (pooled features, its classifier removed)."""
    encoder = create_backbone(backbone, pretrained=pretrained, num_classes=0)
    return BYOL(encoder, mlp(encoder.num_features, projection_hidden, projection_dim),
                mlp(projection_dim, prediction_hidden, projection_dim))


class ByolTask(SslTask):
    teacher = ("online", "target")

    def build_views(self) -> Views:
        return byol_views(self.recipe.aug.preset, self.recipe.data.img_size, self.recipe.aug.compile)

    def build_model(self) -> BYOL:
        m = self.recipe.model
        return build_byol(m.backbone, m.pretrained, m.projection_hidden, m.projection_dim, m.prediction_hidden)

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return model(*batch["views"])
