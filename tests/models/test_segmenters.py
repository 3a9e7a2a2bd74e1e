"""Segmentation networks: logits at the input size for every decoder x several timm encoders, the reference
VGG16-FCN32s head, FCN skip fusion, DeepLabv3's dilation and ASPP rates, clear errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlcvkit.errors import DlcvkitError
from dlcvkit.models.segmenters import FCN, DeepLabV3, bilinear_kernel, build_segmenter

DECODERS = ["fcn32s", "fcn16s", "fcn8s", "deeplabv3"]
# every decoder on three encoders; the VGGs (slow to build in timm, and not dilatable) with the FCNs only:
# fcn32s-vgg16 in test_reference_vgg16_fcn32s_head_exactly, vgg16_bn with the reference's FCN16s
CASES = [(n, b) for b in ("resnet34", "resnet50", "efficientnet_b0") for n in DECODERS]
CASES += [("fcn16s", "vgg16"), ("fcn8s", "vgg16"), ("fcn16s", "vgg16_bn")]


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.randn(2, 3, 64, 96))  # not square: height and width must not be swapped


@pytest.mark.parametrize(("name", "backbone"), CASES)
def test_logits_at_input_resolution(name, backbone):
    torch.manual_seed(0)
    out = _logits(build_segmenter(name, backbone, num_classes=5, output_stride=16, fcn_width=32))
    assert out.shape == (2, 5, 64, 96)
    assert torch.isfinite(out).all()


def test_reference_vgg16_fcn32s_head_exactly():
    model = build_segmenter("fcn32s", "vgg16", num_classes=7)
    head = [(type(m).__name__, getattr(m, "in_channels", None), getattr(m, "out_channels", None),
             getattr(m, "kernel_size", None)) for m in model.classifier]
    assert head == [
        ("Conv2d", 512, 4096, (1, 1)), ("ReLU", None, None, None), ("Dropout2d", None, None, None),
        ("Conv2d", 4096, 4096, (1, 1)), ("ReLU", None, None, None), ("Dropout2d", None, None, None),
        ("Conv2d", 4096, 7, (1, 1)),
    ]  # fmt: skip
    up = model.upsample
    assert isinstance(up, nn.ConvTranspose2d)
    assert (up.in_channels, up.out_channels, up.kernel_size, up.stride) == (7, 7, (32, 32), (32, 32))
    assert len(model.skip_scores) == 0
    convs = [m for m in model.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and convs[-1].out_channels == 512  # VGG16's 13 conv layers, pool5 at 512 channels
    assert _logits(model).shape == (2, 7, 64, 96)


@pytest.mark.parametrize(("name", "skip_channels"), [("fcn16s", [256]), ("fcn8s", [256, 128])])
def test_fcn_fuses_the_stride_16_and_8_stages(name, skip_channels):
    model = build_segmenter(name, "resnet34", num_classes=3, fcn_width=16)
    # coarse to fine: resnet34's layer3 (stride 16, 256 ch), then layer2 (stride 8, 128 ch)
    assert [s.in_channels for s in model.skip_scores] == skip_channels
    assert model.upsample.stride == (32 >> len(skip_channels),) * 2
    # zero-initialised score convs still receive gradient: the skip path is wired into the output
    model(torch.randn(2, 3, 64, 64)).square().mean().backward()
    for score in model.skip_scores:
        assert score.weight.grad.abs().sum() > 0


def test_bilinear_initialisation_interpolates_like_torch():
    x = torch.randn(1, 3, 5, 6)
    up = F.conv_transpose2d(x, bilinear_kernel(3, 4), stride=2, padding=1)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])  # equal away from the border


@pytest.mark.parametrize(("stride", "rates"), [(8, (12, 24, 36)), (16, (6, 12, 18))])
def test_deeplab_dilated_encoder_and_aspp_rates(stride, rates):
    model = build_segmenter("deeplabv3", "resnet50", num_classes=7, output_stride=stride)
    assert isinstance(model, DeepLabV3)
    assert model.encoder.feature_info.reduction() == [stride]
    aspp = model.head[0]
    dilations = [branch[0].dilation[0] for branch in aspp.convs[1:4]]  # the three atrous 3x3 branches
    assert tuple(dilations) == rates
    features = model.encoder(torch.randn(1, 3, 64, 64))[-1]
    assert features.shape[-2:] == (64 // stride, 64 // stride)


def test_deeplab_refuses_an_encoder_without_dilation():
    with pytest.raises(DlcvkitError, match="vgg16.*output_stride=8"):
        build_segmenter("deeplabv3", "vgg16")
    with pytest.raises(DlcvkitError, match="8 or 16"):
        build_segmenter("deeplabv3", "resnet34", output_stride=32)


def test_errors_name_the_problem():
    with pytest.raises(DlcvkitError, match="unknown segmenter 'unet'"):
        build_segmenter("unet", "resnet34")
    with pytest.raises(DlcvkitError, match=r"strides \(16, 16, 16\).*FCN8s"):
        build_segmenter("fcn8s", "vit_tiny_patch16_224")
    with pytest.raises(DlcvkitError, match="unknown timm model"):
        build_segmenter("fcn8s", "no_such_net")
    model = build_segmenter("fcn8s", "resnet18", fcn_width=8)
    assert isinstance(model, FCN)
    with pytest.raises(DlcvkitError, match="multiples of 32"):
        model(torch.randn(1, 3, 48, 64))
