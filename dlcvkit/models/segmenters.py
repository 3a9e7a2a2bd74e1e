"""Semantic segmentation networks on any timm encoder, built by one factory, `build_segmenter`: FCN32s/16s/8s
(Long et al. 2015) and DeepLabv3 (Chen et al. 2017) here, UNet, DeepLabV3+ and FPN from segmentation_models_pytorch
(`dlcvkit.models.smp_decoders`).

The encoder is `timm.create_model(backbone, features_only=True, out_indices=...)`; a decoder sees only the list
of feature maps and their channel counts, never which backbone made them. Every network returns logits
`b classes h w` at the input resolution for inputs whose sides are multiples of `input_multiple(name, ...)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from dlcvkit.errors import DlcvkitError, did_you_mean
from dlcvkit.models.backbones import create_backbone
from dlcvkit.models.smp_decoders import SMP_DECODERS, TITLES, build_smp, smp_input_multiple

SEGMENTERS = ("fcn32s", "fcn16s", "fcn8s", "deeplabv3", *SMP_DECODERS)
# encoder strides each FCN reads: pool5 only, + pool4, + pool3 (Long et al. §4.2)
FCN_STRIDES = {"fcn32s": (32,), "fcn16s": (16, 32), "fcn8s": (8, 16, 32)}
# DeepLabv3 §3.3: rates (6, 12, 18) at output stride 16, doubled at output stride 8
ASPP_RATES = {8: (12, 24, 36), 16: (6, 12, 18)}
INPUT_MULTIPLE = 32  # the FCNs' and DeepLabv3's: five stride-2 stages, or their dilated stand-ins


def input_multiple(name: str, output_stride: int = 8) -> int:
    """The multiple that both sides of the input of segmenter `name` must be."""
    return smp_input_multiple(name, output_stride) if name in SMP_DECODERS else INPUT_MULTIPLE


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """ConvTranspose2d weights `c c k k` that upsample each channel bilinearly and leave the others out.

    FCN initialises its learnable upsampling this way (Long et al. §3.3); torch has no such initialiser.
    """
    factor = (kernel_size + 1) // 2
    centre = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(kernel_size, dtype=torch.float32) - centre).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = ramp[:, None] * ramp[None, :]
    return weight


def _upsampler(channels: int, factor: int, kernel_size: int, padding: int, bias: bool) -> nn.ConvTranspose2d:
    """A learnable upsampling starting as bilinear interpolation (or, when kernel = stride and there is no
    overlap to blend, as nearest: each input pixel copied to its block)."""
    up = nn.ConvTranspose2d(channels, channels, kernel_size, stride=factor, padding=padding, bias=bias)
    with torch.no_grad():
        if kernel_size == factor:
            up.weight.zero_()
            up.weight[range(channels), range(channels)] = 1.0
        else:
            up.weight.copy_(bilinear_kernel(channels, kernel_size))
        if bias:
            up.bias.zero_()
    return up


def _check_input(x: torch.Tensor) -> None:
    h, w = x.shape[-2:]
    if h % INPUT_MULTIPLE or w % INPUT_MULTIPLE:
        raise DlcvkitError(
            f"segmentation input is {w}x{h} pixels; both sides must be multiples of {INPUT_MULTIPLE} "
            "(set data.img_size to one, e.g. 512)"
        )


class FCN(nn.Module):
    """FCN32s/16s/8s: the reference VGG16-FCN32s head on the stride-32 features, plus a 1x1 score conv per skip
    (stride 16, stride 8) fused by 2x learnable upsampling, then one upsampling to the input size."""

    def __init__(self, encoder: nn.Module, num_classes: int, width: int = 4096, dropout: float = 0.5) -> None:
        super().__init__()
        channels = encoder.feature_info.channels()
        self.encoder = encoder
        # VGG16's fc6 and fc7 as 1x1 convolutions, as the reference reports built them
        self.classifier = nn.Sequential(
            nn.Conv2d(channels[-1], width, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
            nn.Conv2d(width, width, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
            nn.Conv2d(width, num_classes, 1),
        )  # fmt: skip
        skips = channels[:-1][::-1]  # coarse to fine: stride 16, then stride 8
        self.skip_scores = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in skips)
        for score in self.skip_scores:  # zero: training starts from the coarser net's output (Long et al. §4.2)
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)
        self.skip_upsamplers = nn.ModuleList(_upsampler(num_classes, 2, 4, 1, bias=False) for _ in skips)
        stride = INPUT_MULTIPLE >> len(skips)
        if skips:  # kernel 2s, padding s/2: exactly s times larger (Long et al.'s FCN16s/8s deconvolutions)
            self.upsample = _upsampler(num_classes, stride, 2 * stride, stride // 2, bias=False)
        else:  # the reference FCN32s: ConvTranspose2d(classes, classes, kernel_size=32, stride=32)
            self.upsample = _upsampler(num_classes, stride, stride, 0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x)
        *skips, top = self.encoder(x)
        score = self.classifier(top)
        for feature, skip_score, upsample in zip(skips[::-1], self.skip_scores, self.skip_upsamplers):
            score = upsample(score) + skip_score(feature)
        return self.upsample(score)


class DeepLabV3(nn.Module):
    """DeepLabv3: torchvision's ASPP head (DeepLabHead) on the last features of a dilated encoder, bilinearly
    upsampled to the input size."""

    def __init__(self, encoder: nn.Module, num_classes: int, rates: tuple[int, int, int]) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = DeepLabHead(encoder.feature_info.channels()[-1], num_classes, rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x)
        logits = self.head(self.encoder(x)[-1])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _built(backbone: str, name: str, what: str, build, options: str = ""):
    """`build()`, an exception of timm or smp turned into one line naming model.backbone and model.name."""
    try:
        return build()
    except DlcvkitError:
        raise
    except Exception as e:  # noqa: BLE001 - timm signals unsupported options with asserts, TypeErrors, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DlcvkitError(
            f"backbone '{backbone}' (model.backbone) cannot be the encoder of {what} (model.name={name}): timm "
            f"cannot build it with features_only{options} ({reason}); choose a CNN such as resnet34 or convnext_tiny"
        ) from None


def _encoder(backbone: str, pretrained: str, name: str, strides: tuple[int, ...], what: str, in_channels: int,
             **kwargs) -> nn.Module:
    """A features_only encoder returning the last len(strides) stages, checked to have exactly those strides."""
    options = "".join(f", {k}={v}" for k, v in kwargs.items())
    encoder = _built(backbone, name, what, lambda: create_backbone(
        backbone, pretrained=pretrained, features_only=True, out_indices=tuple(range(-len(strides), 0)),
        in_chans=in_channels, **kwargs), options)
    found = tuple(encoder.feature_info.reduction())
    if found != strides:
        raise DlcvkitError(
            f"backbone '{backbone}' gives features at strides {found}, but {what} needs strides {strides}; "
            "choose a CNN backbone with stride-doubling stages (vgg16, resnet34, convnext_tiny, ...)"
        )
    return encoder


def build_segmenter(
    name: str,
    backbone: str,
    num_classes: int = 7,
    pretrained: str = "",
    output_stride: int = 8,
    *,
    fcn_width: int = 4096,
    in_channels: int = 3,
) -> nn.Module:
    """A segmentation network by name (one of SEGMENTERS) on the timm encoder `backbone`.

    `pretrained` ("" | local weights file | "hub") initialises the encoder; `output_stride` (8 or 16) is the
    dilated encoder's stride for deeplabv3 and deeplabv3plus (the others need stride 32 and ignore it);
    `fcn_width` is the width of the FCN head's two hidden 1x1 convolutions (4096 = VGG16's fc6/fc7, as in the
    reference); `in_channels` is the number of input bands (timm adapts a pretrained first convolution).
    """
    if name in FCN_STRIDES:
        encoder = _encoder(backbone, pretrained, name, FCN_STRIDES[name], f"FCN{name[3:]}", in_channels)
        return FCN(encoder, num_classes, width=fcn_width)
    if name in ("deeplabv3", "deeplabv3plus") and output_stride not in ASPP_RATES:
        raise DlcvkitError(f"{name} needs model.output_stride 8 or 16, got {output_stride}")
    if name == "deeplabv3":
        encoder = _encoder(backbone, pretrained, name, (output_stride,), "dilated DeepLabv3", in_channels,
                           output_stride=output_stride)
        return DeepLabV3(encoder, num_classes, ASPP_RATES[output_stride])
    if name in SMP_DECODERS:
        options = f", output_stride={output_stride}" if name == "deeplabv3plus" else ""
        rates = ASPP_RATES.get(output_stride)
        return _built(backbone, name, TITLES[name], lambda: build_smp(
            name, backbone, num_classes, pretrained, in_channels, rates, output_stride), options)
    raise DlcvkitError(f"unknown segmenter '{name}'{did_you_mean(name, SEGMENTERS)} (model.name); "
                       f"choose one of {', '.join(SEGMENTERS)}")
