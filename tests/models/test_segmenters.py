"""Segmentation networks: logits at the input size for every decoder x several timm encoders, the reference
VGG16-FCN32s head, FCN skip fusion, DeepLabv3's and DeepLabV3+'s dilation and ASPP rates, smp's decoders on the
timm encoder with a local weights file loaded exactly, N input bands, clear errors."""

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from dlcvkit.errors import DlcvkitError
from dlcvkit.models.segmenters import FCN, DeepLabV3, bilinear_kernel, build_segmenter, input_multiple

DECODERS = ["fcn32s", "fcn16s", "fcn8s", "deeplabv3"]
# every decoder on three encoders; the VGGs (slow to build in timm, and not dilatable) with the FCNs only:
# fcn32s-vgg16 in test_reference_vgg16_fcn32s_head_exactly, vgg16_bn with the reference's FCN16s
CASES = [(n, b) for b in ("resnet34", "resnet50", "efficientnet_b0") for n in DECODERS]
CASES += [("fcn16s", "vgg16"), ("fcn8s", "vgg16"), ("fcn16s", "vgg16_bn")]
# smp's decoders on the three kinds of encoder smp tells apart: features from stride 2 (resnet, efficientnet),
# from stride 1 (vgg) and from stride 4 (convnext: smp adds an empty stride-2 map)
CASES += [("unet", "resnet34"), ("unet", "vgg16"), ("unet", "convnext_atto"), ("deeplabv3plus", "resnet50"),
          ("deeplabv3plus", "efficientnet_b0"), ("fpn", "resnet34"), ("fpn", "convnext_atto")]
SMP = {"unet": smp.Unet, "deeplabv3plus": smp.DeepLabV3Plus, "fpn": smp.FPN}


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
    with pytest.raises(DlcvkitError, match=r"unknown segmenter 'unett' \(did you mean 'unet'\?\) \(model.name\)"):
        build_segmenter("unett", "resnet34")
    with pytest.raises(DlcvkitError, match=r"strides \(16, 16, 16\).*FCN8s"):
        build_segmenter("fcn8s", "vit_tiny_patch16_224")
    with pytest.raises(DlcvkitError, match="unknown timm model"):
        build_segmenter("fcn8s", "no_such_net")
    model = build_segmenter("fcn8s", "resnet18", fcn_width=8)
    assert isinstance(model, FCN)
    with pytest.raises(DlcvkitError, match="multiples of 32"):
        model(torch.randn(1, 3, 48, 64))


@pytest.mark.parametrize("name", list(SMP))
def test_smp_decoder_on_the_timm_encoder(name):
    model = build_segmenter(name, "resnet18", num_classes=5, output_stride=16)
    assert type(model) is SMP[name] and model.segmentation_head[0].out_channels == 5
    encoder = model.encoder.model  # smp's tu- encoder: timm's features_only resnet18, every stage
    assert isinstance(encoder, timm.models.FeatureListNet)
    assert encoder.feature_info.channels() == [64, 64, 128, 256, 512]
    expected = [2, 4, 8, 16, 16] if name == "deeplabv3plus" else [2, 4, 8, 16, 32]  # DeepLabV3+: last stage dilated
    assert encoder.feature_info.reduction() == expected


@pytest.mark.parametrize(("stride", "rates"), [(8, (12, 24, 36)), (16, (6, 12, 18))])
def test_deeplabv3plus_dilation_and_the_papers_aspp_rates(stride, rates):
    model = build_segmenter("deeplabv3plus", "resnet18", output_stride=stride)
    aspp = model.decoder.aspp[0]
    assert tuple(branch[0][0].dilation[0] for branch in aspp.convs[1:4]) == rates  # the three atrous branches
    assert model.encoder(torch.randn(1, 3, 64, 64))[-1].shape[-2:] == (64 // stride, 64 // stride)
    assert input_multiple("deeplabv3plus", stride) == stride
    assert model.eval()(torch.randn(1, 3, 48, 48)).shape == (1, 7, 48, 48)  # 48: a multiple of 16, not of 32
    assert [input_multiple(n) for n in ("fcn8s", "deeplabv3", "unet", "fpn")] == [32] * 4


@pytest.mark.parametrize("name", ["fcn8s", "deeplabv3", *SMP])
def test_n_input_bands_reach_the_first_convolution(name):
    model = build_segmenter(name, "test_resnet", output_stride=16, fcn_width=8, in_channels=4).eval()
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 4
    assert model(torch.randn(2, 4, 64, 32)).shape == (2, 7, 64, 32)


def _weights_file(path, backbone="resnet18"):
    """A timm classifier's random (seeded) weights, head included, as a file a user would pass."""
    torch.manual_seed(3)
    state = timm.create_model(backbone).state_dict()
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, path) if str(path).endswith(".safetensors") else torch.save(state, path)
    return state


@pytest.mark.parametrize(("name", "suffix"), [("unet", ".safetensors"), ("deeplabv3plus", ".pth"),
                                              ("fpn", ".safetensors")])
def test_a_local_weights_file_loads_into_the_smp_encoder_exactly(name, suffix, tmp_path):
    state = _weights_file(tmp_path / f"resnet18{suffix}")
    model = build_segmenter(name, "resnet18", pretrained=str(tmp_path / f"resnet18{suffix}"), output_stride=16)
    encoder = model.encoder.model.state_dict()
    assert len(encoder) == len(state) - 2  # every weight but the classifier's (fc.weight, fc.bias)
    for key, value in encoder.items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("name", ["fcn8s", "unet"])
def test_a_three_band_weights_file_is_adapted_to_four_bands(name, tmp_path):
    state = _weights_file(tmp_path / "r.safetensors")
    model = build_segmenter(name, "resnet18", pretrained=str(tmp_path / "r.safetensors"), fcn_width=8, in_channels=4)
    conv1 = (model.encoder.model if name == "unet" else model.encoder).conv1.weight
    rgb = state["conv1.weight"]  # timm's adapt_input_conv: the RGB filters repeated, scaled by 3 / bands
    torch.testing.assert_close(conv1, torch.cat([rgb, rgb[:, :1]], dim=1) * 3 / 4, rtol=0, atol=0)


def test_smp_errors_name_the_option(monkeypatch, tmp_path):
    with pytest.raises(DlcvkitError) as e:
        build_segmenter("unet", "vit_tiny_patch16_224")
    assert str(e.value).startswith("backbone 'vit_tiny_patch16_224' (model.backbone) cannot be the encoder of UNet "
                                   "(model.name=unet): timm cannot build it with features_only (Unsupported model "
                                   "downsampling pattern.)")
    with pytest.raises(DlcvkitError, match=r"'vgg16' \(model.backbone\).*DeepLabV3\+ \(model.name=deeplabv3plus\)"
                                           ".*output_stride=16"):
        build_segmenter("deeplabv3plus", "vgg16", output_stride=16)
    with pytest.raises(DlcvkitError, match="^deeplabv3plus needs model.output_stride 8 or 16, got 32$"):
        build_segmenter("deeplabv3plus", "resnet18", output_stride=32)
    assert build_segmenter("fpn", "test_resnet", output_stride=32)  # not FPN's key: left alone
    with pytest.raises(DlcvkitError, match="unknown timm model 'resnet_18'"):
        build_segmenter("unet", "resnet_18")
    with pytest.raises(DlcvkitError, match=f"^pretrained weights file {tmp_path / 'no.pth'} does not exist"):
        build_segmenter("fpn", "resnet18", pretrained=str(tmp_path / "no.pth"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DlcvkitError, match="asked from the hub, which cannot be reached"):
        build_segmenter("unet", "resnet18", pretrained="hub")


@pytest.mark.parametrize("name", ["fcn8s", "deeplabv3", "unet"])
def test_a_file_whose_keys_do_not_fit_is_refused_not_loaded_in_part(name, tmp_path):
    """A whole classifier's weights (its backbone under "backbone."): timm loads features_only encoders
    non-strictly, so without the check it would load nothing and train from random weights."""
    state = _weights_file(tmp_path / "r.safetensors")
    save_file({f"backbone.{k}": v for k, v in state.items()}, tmp_path / "classifier.safetensors")
    with pytest.raises(DlcvkitError) as e:
        build_segmenter(name, "resnet18", pretrained=str(tmp_path / "classifier.safetensors"), fcn_width=8)
    assert str(e.value) == (f"pretrained weights {tmp_path / 'classifier.safetensors'} do not fit 'resnet18': 100 of its "
                            "weights are not in the file (first: conv1.weight); pass weights of resnet18 "
                            "(model.pretrained)")
