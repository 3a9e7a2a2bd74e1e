"""DINO (Caron et al. 2021, "Emerging properties in self-supervised vision transformers"): self-distillation with
no labels, following Algorithm 1 of the paper and the authors' main_dino.py:
    s = g_θs(f_θs(x))  for all crops x (2 global, N local)      student: backbone, then the DINO head
    t = g_θt(f_θt(x))  for the 2 global crops only (no gradient)  teacher: the EMA of the student
    loss = mean over pairs of different crops (t_i, s_j), i ≠ j, of H(softmax((t_i − c)/τ_t), softmax(s_j/τ_s))
    c ← m·c + (1 − m)·mean of t over the global batch             centering (eq. 4), after the loss
    θs ← optimizer(θs, ∇ loss);  θt ← λθt + (1 − λ)θs               (the EMA teacher of dlcvkit.tasks.ssl)
τ_t rises linearly over the first epochs (warm-up), λ from `tau_base` to 1 by a cosine (§3.1 and Appendix).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Literal

import kornia.augmentation as K
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from dlcvkit.augment.views import GREY_JITTER, PAPER_JITTER, Views, compile_colour_jitter, paper_view
from dlcvkit.errors import DlcvkitError
from dlcvkit.models.backbones import create_backbone
from dlcvkit.tasks.ssl import SslModel, SslRecipe, SslTask, frozen_copy


@dataclass
class DinoModel(SslModel):
    out_dim: int = 65536  # K, the outputs of the head's last layer (main_dino.py's default)
    hidden: int = 2048  # the head: 3-layer MLP of 2048 hidden units, bottleneck 256, then the last layer (§3.1)
    bottleneck: int = 256
    head_bn: bool = False  # BatchNorm in the head's MLP (main_dino.py's use_bn_in_head; off by default)
    norm_last_layer: bool = True  # the last layer's weight norm frozen to 1 (stabler, esp. for ViT-S)
    freeze_last_layer: int = 1  # epochs during which the last layer does not learn (main_dino.py's default)
    tau_base: float = 0.996  # teacher EMA λ at step 0, rising to 1 by a cosine over the run (§3.1)
    student_temp: float = 0.1  # τ_s (§3.1)
    teacher_temp: float = 0.07  # τ_t after the warm-up: 0.04 -> 0.07 over the first 30 epochs (§3.1, Appendix)
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 30
    center_momentum: float = 0.9  # m of the centering (eq. 4)


@dataclass
class DinoAug:
    # paper: main_dino.py's views: global crop 1 always blurred, global crop 2 blurred with p 0.1 and solarized with
    # p 0.2, local crops blurred with p 0.5 (BYOL's asymmetric views plus multi-crop); paper_gray: the same, every
    # crop grayscale (random-colour data such as `dlcvkit data synth`: see dlcvkit.tasks.byol); grey: grey images
    # such as Fashion-MNIST, brightness and contrast jitter only; none: the crops are the image resized (checks
    # without randomness)
    preset: Literal["paper", "paper_gray", "grey", "none"] = "paper"
    local_crops: int = 6  # N local crops (the paper's best: 10; main_dino.py: 8; 6 costs less)
    local_size: int = 0  # side of the local crops; 0 = data.img_size x 96/224 to a multiple of 8 (96 at 224)
    global_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])  # crop area range (main_dino.py; ResNet-50:
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.4])  # 0.14-1 and 0.05-0.14)
    compile: bool = False  # torch.compile the colour jitter (see dlcvkit.tasks.byol.ByolAug.compile)


@dataclass
class DinoRecipe(SslRecipe):
    task: str = "dino"
    model: DinoModel = field(default_factory=DinoModel)
    aug: DinoAug = field(default_factory=DinoAug)


def default_local_size(img_size: int) -> int:
    """The paper's 96 px local crops for 224 px global ones, scaled to `img_size`, a multiple of 8 (56 at 128)."""
    return max(8, 8 * round(img_size * 96 / 224 / 8))


def dino_views(aug: DinoAug, size: int) -> Views:
    """2 global crops of `size`, then `aug.local_crops` local crops of `aug.local_size` (see `DinoAug`)."""
    lo, hi = _scale(aug.global_scale, "aug.global_scale"), _scale(aug.local_scale, "aug.local_scale")
    if aug.preset == "none":
        crops = [nn.Identity(), nn.Identity(), K.Resize((aug.local_size, aug.local_size), antialias=True)]
    else:
        gray = {"paper": 0.2, "paper_gray": 1.0, "grey": 0.0}[aug.preset]
        jitter = GREY_JITTER if aug.preset == "grey" else PAPER_JITTER
        crops = [paper_view(size, 1.0, 0.0, gray, jitter, lo), paper_view(size, 0.1, 0.2, gray, jitter, lo),
                 paper_view(aug.local_size, 0.5, 0.0, gray, jitter, hi)]
    views = Views(*((count, crop) for count, crop in zip((1, 1, aug.local_crops), crops) if count > 0))
    return compile_colour_jitter(views) if aug.compile else views


def _scale(value: list[float], key: str) -> tuple[float, float]:
    if len(value) != 2 or not 0 < value[0] <= value[1] <= 1:
        raise DlcvkitError(f"recipe key '{key}' must be [low, high] with 0 < low <= high <= 1, got {value}")
    return value[0], value[1]


class DinoHead(nn.Module):
    """main_dino.py's DINOHead: 3-layer MLP (GELU) to a bottleneck, L2 normalisation, then a weight-normalised
    linear layer without bias whose norm g is 1 (frozen with `norm_last_layer`)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 2048, bottleneck: int = 256, bn: bool = False,
                 norm_last_layer: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in (in_dim, hidden):
            layers += [nn.Linear(width, hidden), *([nn.BatchNorm1d(hidden)] if bn else []), nn.GELU()]
        self.mlp = nn.Sequential(*layers, nn.Linear(hidden, bottleneck))
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        norm = self.last_layer.parametrizations.weight.original0  # g, `out_dim 1`
        norm.data.fill_(1.0)
        norm.requires_grad_(not norm_last_layer)

    def forward(self, features: torch.Tensor, train_last_layer: bool = True) -> torch.Tensor:
        x = F.normalize(self.mlp(features), dim=-1)
        weight = self.last_layer.weight
        if not train_last_layer:
            # main_dino.py sets these gradients to None; zeros here, as DDP expects one for every parameter (weight
            # decay of AdamW, SGD or LARS then only shrinks v, which the weight norm divides out)
            weight = weight.detach() + 0 * weight
        return F.linear(x, weight)


def multi_crop(encoder: nn.Module, head: DinoHead, crops: list[torch.Tensor], **head_options) -> torch.Tensor:
    """main_dino.py's MultiCropWrapper: the encoder on the consecutive crops of one size at once (BatchNorm over
    them together), the head on all; `(v b) c h w` -> `(v b) k`."""
    features, start = [], 0
    while start < len(crops):
        end = start + 1
        while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
            end += 1
        features.append(encoder(torch.cat(crops[start:end])))
        start = end
    return head(torch.cat(features), **head_options)


def dino_loss(student: torch.Tensor, teacher: torch.Tensor, center: torch.Tensor, teacher_temp: float,
              student_temp: float) -> torch.Tensor:
    """H(P_t, P_s) averaged over the pairs of different crops, each pair's mean over the batch (Algorithm 1);
    `student` `s b k` of all crops, `teacher` `t b k` of the global crops (crop i of both is the same view)."""
    with torch.autocast(student.device.type, enabled=False):  # in float32 under mixed precision, as main_dino.py
        targets = F.softmax((teacher.float() - center) / teacher_temp, dim=-1).detach()
        log_probs = F.log_softmax(student.float() / student_temp, dim=-1)
        cross = -torch.einsum("tbk,sbk->ts", targets, log_probs) / student.shape[1]  # per pair, mean over the batch
    pairs = ~torch.eye(*cross.shape, dtype=torch.bool, device=cross.device)  # a crop is not compared with itself
    return cross[pairs].mean()


@torch.no_grad()
def batch_center(teacher: torch.Tensor) -> torch.Tensor:
    """The mean teacher output over the global batch, `t b k` -> `1 k` (main_dino.py's update_center: the sums of
    every process all-reduced, divided by the global count), so that N processes centre as one."""
    total = teacher.float().sum(dim=(0, 1)).unsqueeze(0)
    count = teacher.shape[0] * teacher.shape[1]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(total)
        count *= dist.get_world_size()
    return total / count


class DINO(nn.Module):
    """`student` = encoder then head; `teacher` = its EMA; `center` c, a buffer, so that checkpoints keep it."""

    def __init__(self, encoder: nn.Module, head: DinoHead, student_temp: float = 0.1,
                 center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student = nn.Sequential(OrderedDict(encoder=encoder, head=head))
        self.teacher = frozen_copy(self.student)
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, head.last_layer.out_features))

    @property
    def encoder(self) -> nn.Module:
        """The teacher's backbone: what DINO evaluates and hands on (main_dino.py's checkpoint key "teacher"; the
        paper finds the teacher better than the student throughout training)."""
        return self.teacher.encoder

    def forward(self, crops: list[torch.Tensor], teacher_temp: float, train_last_layer: bool = True) -> torch.Tensor:
        """The loss of the crops (the 2 global ones first); updates the center after it."""
        s = multi_crop(self.student.encoder, self.student.head, crops, train_last_layer=train_last_layer)
        with torch.no_grad():
            t = multi_crop(self.teacher.encoder, self.teacher.head, crops[:2])
        s, t = s.unflatten(0, (len(crops), -1)), t.unflatten(0, (2, -1))  # `(v b) k` -> `v b k`
        loss = dino_loss(s, t, self.center, teacher_temp, self.student_temp)
        self.center.lerp_(batch_center(t), 1 - self.center_momentum)  # c ← m·c + (1 − m)·mean(t)
        return loss


def teacher_temperature(epoch: int, warmup: float, final: float, warmup_epochs: int) -> float:
    """τ_t of an epoch: main_dino.py's np.linspace(warmup, final, warmup_epochs), then `final`."""
    if epoch >= warmup_epochs:
        return final
    return warmup + (final - warmup) * epoch / max(1, warmup_epochs - 1)


def build_dino(m: DinoModel) -> DINO:
    """DINO around a timm backbone by name (pooled features, its classifier removed)."""
    encoder = create_backbone(m.backbone, pretrained=m.pretrained, num_classes=0)
    if getattr(encoder, "dynamic_img_size", None) is False:
        # a timm ViT takes only its own image size: local crops (and global ones of another size) need the
        # position embedding interpolated; it keeps its parameters, so the export loads into the plain model
        encoder = create_backbone(m.backbone, pretrained=m.pretrained, num_classes=0, dynamic_img_size=True)
    head = DinoHead(encoder.num_features, m.out_dim, m.hidden, m.bottleneck, m.head_bn, m.norm_last_layer)
    return DINO(encoder, head, m.student_temp, m.center_momentum)


class DinoTask(SslTask):
    teacher = ("student", "teacher")

    @classmethod
    def resolve(cls, recipe: DinoRecipe) -> DinoRecipe:
        """`aug.local_size` 0 becomes its default for `data.img_size`, written into the run's recipe."""
        if recipe.aug.local_size:
            return recipe
        return replace(recipe, aug=replace(recipe.aug, local_size=default_local_size(recipe.data.img_size)))

    def build_views(self) -> Views:
        return dino_views(self.recipe.aug, self.recipe.data.img_size)

    def build_model(self) -> DINO:
        return build_dino(self.recipe.model)

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        m, epoch = self.recipe.model, self.context.epoch  # the schedules go by epoch, as main_dino.py's
        temp = teacher_temperature(epoch, m.warmup_teacher_temp, m.teacher_temp, m.warmup_teacher_temp_epochs)
        return model(batch["views"], temp, train_last_layer=epoch >= m.freeze_last_layer)
