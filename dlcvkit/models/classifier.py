"""Image classifiers: a timm backbone's features followed by a linear or MLP head, all chosen by the recipe.

The reference reports' heads are recipe values, not code:
- ResNet-152 + Linear 2048→50: `pool = "backbone"`, `head = []` (timm's pooled features, `num_features` wide);
- VGG16 + Linear 25088→50: `pool = "grid"` (torchvision's classifier input: the last 512-channel feature map
  average-pooled to 7×7 and flattened), `head = []`;
- VGG19-bn + 4096-4096 MLP: `pool = "grid"`, `head = [4096, 4096]`, `dropout = 0.5` (torchvision's classifier).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dlcvkit.errors import DlcvkitError
from dlcvkit.models.backbones import create_backbone

POOLS = ("backbone", "grid")
SMALL_IMAGES = ("none", "upsample", "stem")


def build_head(in_features: int, num_classes: int, hidden: list[int] = (), dropout: float = 0.0) -> nn.Sequential:
    """Linear head, or an MLP `in -> hidden[0] -> ... -> num_classes`: each hidden layer Linear, ReLU, Dropout
    (torchvision's VGG classifier); a linear head gets its dropout before the layer (timm's `drop_rate`)."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)] + ([nn.Dropout(dropout)] if dropout else [])
        width = h
    if dropout and not hidden:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class GridPooled(nn.Module):
    """The last feature map of a `features_only` timm network, average-pooled to `grid`×`grid` and flattened
    (channels·grid² features; a smaller map is repeated, as torchvision's AdaptiveAvgPool2d((7, 7)) does)."""

    def __init__(self, net: nn.Module, grid: int) -> None:
        super().__init__()
        self.net, self.grid = net, grid
        self.num_features = net.feature_info.channels()[-1] * grid * grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.net(x)[-1], self.grid).flatten(1)


class Classifier(nn.Module):
    """`head(backbone(x))`; `features(x)` is the input of the last linear layer (the penultimate features).

    With `input_size` > 0, images of another size are resized (bilinear) to `input_size`×`input_size` on the
    device before the backbone, so 32 px images meet an ImageNet backbone at the scale it was trained on.
    With `freeze_backbone` the backbone gets no gradient and stays in eval mode even in `train()`, so its
    BatchNorm statistics stay those of its pre-training (a linear probe of frozen features).
    """

    def __init__(self, backbone: nn.Module, head: nn.Sequential, freeze_backbone: bool = False,
                 input_size: int = 0) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.freeze_backbone, self.input_size = freeze_backbone, input_size
        if freeze_backbone:
            backbone.requires_grad_(False)
            backbone.eval()

    def train(self, mode: bool = True) -> "Classifier":
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's output (b d): what the head reads."""
        if self.input_size and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.backbone(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head[:-1](self.backbone_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone_features(x))


def adapt_stem(net: nn.Module, name: str) -> None:
    """Remove the stem's downsampling for small (32 px) images, CIFAR-style: the first convolution gets stride 1
    and a stem max-pool (timm's `maxpool`, ResNet family) becomes the identity. Weight shapes do not change,
    so pretrained weights still load."""
    first = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    changed = False
    if first is not None and first.stride != (1, 1):
        first.stride, changed = (1, 1), True
    if isinstance(getattr(net, "maxpool", None), nn.MaxPool2d):
        net.maxpool, changed = nn.Identity(), True
    if not changed:
        raise DlcvkitError(
            f"model.small_images='stem': '{name}' has no strided stem convolution or stem max-pool to remove; "
            "use small_images='upsample' (or 'none')"
        )


def build_classifier(
    backbone: str,
    num_classes: int,
    hidden: list[int] = (),
    dropout: float = 0.0,
    pretrained: str = "",
    freeze_backbone: bool = False,
    *,
    pool: str = "backbone",
    grid: int = 7,
    small_images: str = "none",
    input_size: int = 224,
) -> Classifier:
    """A timm backbone by name (its own classifier removed) with a fresh head.

    `pool`: "backbone" = timm's pooled features (`num_features`), "grid" = the last feature map pooled to
    `grid`×`grid` and flattened. `small_images`: "none", "upsample" (resize inputs to `input_size` in the
    model) or "stem" (see `adapt_stem`).
    """
    if pool not in POOLS:
        raise DlcvkitError(f"model.pool={pool!r}: expected one of {', '.join(POOLS)}")
    if small_images not in SMALL_IMAGES:
        raise DlcvkitError(f"model.small_images={small_images!r}: expected one of {', '.join(SMALL_IMAGES)}")
    if pool == "grid":
        if grid < 1:
            raise DlcvkitError(f"model.grid={grid}: must be at least 1")
        try:  # only the layers up to the last feature map: no unused parameters (VGG's fc6/fc7) under DDP
            net = GridPooled(create_backbone(backbone, pretrained=pretrained, features_only=True), grid)
        except DlcvkitError:
            raise
        except Exception as e:  # noqa: BLE001 - timm refuses features_only with asserts, TypeErrors, ...
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DlcvkitError(
                f"model.pool='grid' needs feature maps, which timm cannot give for '{backbone}' ({reason}); "
                "use pool='backbone'"
            ) from None
    else:
        net = create_backbone(backbone, pretrained=pretrained, num_classes=0)
    if small_images == "stem":
        adapt_stem(net.net if pool == "grid" else net, backbone)
    if small_images == "upsample" and input_size < 1:
        raise DlcvkitError(f"model.input_size={input_size}: must be at least 1 with small_images='upsample'")
    # timm's pooled output is `head_hidden_size` wide where a pre-logits layer follows the features (VGG's
    # fc6/fc7: 4096, MobileNetV3's conv_head), else `num_features`
    width = getattr(net, "head_hidden_size", None) or net.num_features
    return Classifier(net, build_head(width, num_classes, list(hidden), dropout), freeze_backbone,
                      input_size=input_size if small_images == "upsample" else 0)
