"""UNet (Ronneberger et al. 2015), DeepLabV3+ (Chen et al. 2018) and FPN (Kirillov et al. 2019, the panoptic FPN
head) from segmentation_models_pytorch, on any timm encoder through smp's `tu-` encoders (TimmUniversalEncoder).

smp builds the encoder as `timm.create_model(backbone, features_only=True, in_chans=..., out_indices=...)` and
hands the decoder the features at strides 1 (the input), 2, 4, 8, 16, 32 (transformer-style encoders, which
start at stride 4, get an empty stride-2 map). The pretrained weights reach that timm model through
`create_backbone`, the loader every dlcvkit backbone uses.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn

from dlcvkit.models.backbones import create_backbone

SMP_DECODERS = {"unet": smp.Unet, "deeplabv3plus": smp.DeepLabV3Plus, "fpn": smp.FPN}
TITLES = {"unet": "UNet", "deeplabv3plus": "DeepLabV3+", "fpn": "FPN"}


def smp_input_multiple(name: str, output_stride: int) -> int:
    """The multiple of 32 (UNet, FPN: five stride-2 stages) or of DeepLabV3+'s output stride (its last stages
    are dilated, not strided) that input sides must be, as smp's `check_input_shape` demands."""
    return output_stride if name == "deeplabv3plus" else 32


def build_smp(name: str, backbone: str, num_classes: int, pretrained: str, in_channels: int,
              aspp_rates: tuple[int, int, int] | None, output_stride: int) -> nn.Module:
    """smp's `name` decoder on the timm encoder `backbone`; its encoder weights from `pretrained` ("" | a file |
    "hub"); `aspp_rates` and `output_stride` for deeplabv3plus only."""
    decoder = SMP_DECODERS[name]
    # DeepLabV3+ §4.1 trains at output stride 16 with the ASPP rates of DeepLabv3 (6, 12, 18), doubled at
    # stride 8; smp's default is (12, 24, 36) whatever the stride
    options = {"encoder_output_stride": output_stride, "decoder_atrous_rates": aspp_rates} \
        if name == "deeplabv3plus" else {}

    def factory(timm_name: str, pretrained: bool = False, **timm_kwargs) -> nn.Module:
        # encoder_weights=True: smp asks timm for the weights, which `pretrained_cfg_overlay` (a local file)
        # or the hub provide, as for any timm model
        return decoder(encoder_name=f"tu-{timm_name}", encoder_weights=True if pretrained else None,
                       classes=num_classes, in_channels=in_channels, **options, **timm_kwargs)

    return create_backbone(backbone, pretrained, factory=factory)
