"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

Algorithm 1 of the paper, with the optimizer step left to the engine's loop:
    v₁, v₂ = t(x), t′(x)                      two views of every image, drawn from one augmentation family (§3)
    z      = g(f(v))                          encoder f, projection head g (Linear, BN, ReLU, Linear; §2.1)
    loss   = NT-Xent(z₁, z₂)                  each z's positive is its other view, every other z of the GLOBAL
                                              batch a negative (eq. 1, mean over the 2N queries)
No EMA teacher, no predictor: the negatives prevent collapse. On several processes the negatives of every process
are gathered with their gradients, so that a run computes the loss and gradients of one process on the global
batch (see `nt_xent`). With train.grad_accum > 1 a micro-batch contrasts within itself only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.nn.functional import all_gather

from dlcvkit.augment.views import Views, paper_view
from dlcvkit.models.backbones import create_backbone
from dlcvkit.tasks.byol import mlp
from dlcvkit.tasks.ssl import SslModel, SslRecipe, SslTask


@dataclass
class SimclrModel(SslModel):
    projection_hidden: int = 2048  # head g: Linear, BN, ReLU, Linear (§2.1; 2048 = ResNet-50's features)
    projection_dim: int = 128  # §B.1: 128-d output
    # τ of NT-Xent: 0.5 suits small batches and Adam (the paper's CIFAR setting, §B.9; lightly's default);
    # the paper's ImageNet runs (LARS, batch 4096) use 0.1 (Table 5)
    temperature: float = 0.5


@dataclass
class SimclrAug:
    # paper: §3 / Appendix A, both views from one family: random resized crop 8-100%, flip, colour jitter of
    # strength s at p 0.8, grayscale p 0.2, Gaussian blur p `blur_p`; paper_gray: the same, every view grayscale
    # (for data whose colours are random per image, such as `dlcvkit data synth`: the palette alone would tell the
    # images apart); grey: grey images such as Fashion-MNIST, brightness and contrast jitter only, crops of at least
    # 20% (a small object stays recognisable at 28-32 px); none: both views = the image (checks without randomness)
    preset: Literal["paper", "paper_gray", "grey", "none"] = "paper"
    strength: float = 1.0  # s of the colour jitter (0.8s, 0.8s, 0.8s, 0.2s; Appendix A, Table 1 for other s)
    blur_p: float = 0.5  # the paper's ImageNet setting; its CIFAR runs (32 px) use no blur (§B.9): 0


@dataclass
class SimclrRecipe(SslRecipe):
    task: str = "simclr"
    model: SimclrModel = field(default_factory=SimclrModel)
    aug: SimclrAug = field(default_factory=SimclrAug)


def simclr_views(preset: str, size: int, strength: float = 1.0, blur_p: float = 0.5) -> Views:
    """The two views of a preset (see `SimclrAug`), `size` x `size`: one pipeline drawn twice per image."""
    s = strength
    if preset in ("paper", "paper_gray"):
        gray = 1.0 if preset == "paper_gray" else 0.2
        pipeline = paper_view(size, blur_p, 0.0, gray, (0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s))
    elif preset == "grey":
        pipeline = paper_view(size, blur_p, 0.0, 0.0, (0.8 * s, 0.8 * s, 0.0, 0.0), scale=(0.2, 1.0))
    elif preset == "none":
        pipeline = nn.Identity()
    else:
        raise ValueError(f"unknown SimCLR augmentation preset {preset!r}")
    return Views((2, pipeline))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (eq. 1) of this process's projections `b d` of the two views, against those of every process.

    Each process takes the mean over its own 2b queries against all 2bN keys. The keys are gathered WITH their
    gradients (torch.distributed.nn's all_gather: its backward sums what every process sends back to a key into
    the key's own process), so the gradient reaching process r's projections z is ∂(Σ_q L_q)/∂z, that of the SUM of
    the N processes' losses L_q. DDP then averages the parameter gradients over the processes:
        (1/N) Σ_r Σ_{z of r} ∂(Σ_q L_q)/∂z · ∂z/∂θ = ∂/∂θ (1/N) Σ_q L_q = ∂L/∂θ,
    as (1/N) Σ_q L_q = (1/N) Σ_q (1/2b) Σ_{i of q} ℓ_i = (1/2bN) Σ_i ℓ_i = L, the one-process loss of the global
    batch. SyncBatchNorm's backward sums over the processes the same way, so the BN layers agree as well.
    """
    z1, z2 = F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)
    b, n, rank = len(z1), 1, 0
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        n, rank = dist.get_world_size(), dist.get_rank()
        keys = torch.cat([*all_gather(z1), *all_gather(z2)])  # `(2 n b) d`: view 1 of all images, then view 2
    else:
        keys = torch.cat([z1, z2])
    queries = torch.cat([z1, z2])  # `(2 b) d`
    logits = queries @ keys.T / temperature
    # the batch is split into contiguous slices in rank order: this process's images are rank*b ... rank*b + b - 1
    own = rank * b + torch.arange(b, device=z1.device)
    itself = torch.cat([own, own + n * b])  # a query's own key is no negative
    positive = torch.cat([own + n * b, own])  # its other view
    rows = torch.arange(2 * b, device=z1.device)
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[rows, itself] = True
    return F.cross_entropy(logits.masked_fill(mask, float("-inf")), positive)


class SimCLR(nn.Module):
    """Encoder f and projection head g; the representation is f's (pooled features), g is dropped after training
    (§4.2: h is better than z = g(h) for downstream tasks)."""

    def __init__(self, encoder: nn.Module, projector: nn.Module, temperature: float) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.temperature = temperature

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        # both views in one pass: BatchNorm normalises over the 2b images, as the paper's implementation does
        z1, z2 = self.projector(self.encoder(torch.cat([view1, view2]))).chunk(2)
        return nt_xent(z1, z2, self.temperature)


def build_simclr(backbone: str, pretrained: str = "", projection_hidden: int = 2048, projection_dim: int = 128,
                 temperature: float = 0.5) -> SimCLR:
    """SimCLR around a timm backbone by name (pooled features, its classifier removed)."""
    encoder = create_backbone(backbone, pretrained=pretrained, num_classes=0)
    return SimCLR(encoder, mlp(encoder.num_features, projection_hidden, projection_dim), temperature)


class SimclrTask(SslTask):
    def build_views(self) -> Views:
        aug = self.recipe.aug
        return simclr_views(aug.preset, self.recipe.data.img_size, aug.strength, aug.blur_p)

    def build_model(self) -> SimCLR:
        m = self.recipe.model
        return build_simclr(m.backbone, m.pretrained, m.projection_hidden, m.projection_dim, m.temperature)

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return model(*batch["views"])
