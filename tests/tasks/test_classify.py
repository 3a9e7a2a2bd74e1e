"""Classifier heads, pooling and small-image handling built from recipes; mixup wiring of the classify task."""

import pytest
import torch
from torch import nn

from dlcvkit.config import load_recipe
from dlcvkit.errors import DlcvkitError
from dlcvkit.models.classifier import build_classifier
from dlcvkit.recipes import shipped
from dlcvkit.tasks.classify import ClassifyRecipe, ClassifyTask


def _linear_params(*widths: int) -> int:
    return sum(a * b + b for a, b in zip(widths, widths[1:]))


def _model(recipe: str, *overrides: str) -> nn.Module:
    recipe = load_recipe(shipped(recipe), ClassifyRecipe, ["model.pretrained=", "model.num_classes=50", *overrides])
    return ClassifyTask(recipe).build_model().eval()


def test_vgg16bn_recipe_is_vgg16_with_linear_25088_to_50():
    model = _model("cls_p1_vgg16bn")
    linears = [m for m in model.head if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(25088, 50)]
    assert sum(p.numel() for p in model.head.parameters()) == _linear_params(25088, 50)
    # the backbone is VGG16-bn's 13 convolutions only (fc6/fc7 left out): 14,723,136 weights in torchvision
    assert sum(p.numel() for p in model.backbone.parameters()) == 14_723_136
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 50)


def test_vgg19bn_mlp_head_is_a_recipe_with_torchvisions_layers():
    model = _model("cls_p1_vgg16bn", "model.backbone=vgg19_bn", "model.head=[4096, 4096]",
                   "model.dropout=0.5", "model.small_images=none")
    kinds = [type(m).__name__ for m in model.head]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]  # torchvision's classifier
    assert sum(p.numel() for p in model.head.parameters()) == _linear_params(25088, 4096, 4096, 50)
    with torch.no_grad():
        assert model.features(torch.zeros(1, 3, 32, 32)).shape == (1, 4096)


def test_resnet50_recipe_has_linear_2048_to_50():
    model = _model("cls_p1_resnet50")
    assert [(m.in_features, m.out_features) for m in model.head] == [(2048, 50)]


def test_mlp_head_shapes_parameters_and_penultimate_features():
    model = build_classifier("test_resnet", 5, hidden=[32, 16], dropout=0.1).eval()  # test_resnet: 96 features
    assert sum(p.numel() for p in model.head.parameters()) == _linear_params(96, 32, 16, 5)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.features(x).shape == (2, 16)
        torch.testing.assert_close(model.head[-1](model.features(x)), model(x))
    linear_with_dropout = build_classifier("test_resnet", 5, dropout=0.3)
    assert [type(m).__name__ for m in linear_with_dropout.head] == ["Dropout", "Linear"]


def test_head_reads_timms_pooled_width_after_pre_logits():
    # MobileNetV3 pools after its conv_head: 1024 wide although num_features is 288 (VGG likewise: 4096, not 512)
    model = build_classifier("mobilenetv3_small_050", 3).eval()
    assert model.head[-1].in_features == 1024
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_stem_adaptation_keeps_4x4_maps_for_32px_and_the_weight_shapes():
    plain = build_classifier("test_resnet", 3, pool="grid", grid=1)
    adapted = build_classifier("test_resnet", 3, pool="grid", grid=1, small_images="stem")
    x = torch.zeros(2, 3, 32, 32)
    assert plain.backbone.net(x)[-1].shape[-1] == 1  # 32 / 32
    assert adapted.backbone.net(x)[-1].shape[-1] == 4  # 32 / 8: stride-1 stem, no max-pool
    assert {k: v.shape for k, v in plain.state_dict().items()} == {k: v.shape for k, v in adapted.state_dict().items()}


def test_upsample_resizes_inside_the_model():
    model = build_classifier("test_resnet", 3, small_images="upsample", input_size=64).eval()
    seen = []
    model.backbone.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    with torch.no_grad():
        model(torch.zeros(2, 3, 32, 32))
    assert seen == [(2, 3, 64, 64)]


def test_bad_model_choices_are_one_line_errors():
    with pytest.raises(DlcvkitError, match="small_images"):
        build_classifier("vgg11", 3, pool="grid", small_images="stem")  # VGG has no strided stem
    with pytest.raises(DlcvkitError, match="unknown timm model"):
        build_classifier("resnet_does_not_exist", 3)


def _task(**aug) -> ClassifyTask:
    recipe = ClassifyRecipe()
    recipe.model.num_classes = 4
    recipe.data.img_size = 8
    recipe.aug.preset = "none"
    for key, value in aug.items():
        setattr(recipe.aug, key, value)
    return ClassifyTask(recipe)


def test_mixup_mixes_each_image_with_its_reversed_partner_and_targets_match():
    task = _task(mixup=1.0)
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    plain = _task().augment({"image": images, "label": labels})["image"]
    out = task.augment({"image": images, "label": labels})
    target = out["target"]
    torch.testing.assert_close(target.sum(dim=1), torch.ones(6))
    lam = float(target[0, 0])  # image 0 (label 0) is paired with image 5 (label 1)
    assert float(target[0, 1]) == pytest.approx(1 - lam)
    torch.testing.assert_close(out["image"], lam * plain + (1 - lam) * plain.flip(0))
    loss = task.loss(lambda x: torch.zeros(len(x), 4), out)  # uniform logits: cross-entropy log 4 for any target
    assert float(loss) == pytest.approx(float(torch.log(torch.tensor(4.0))))


def test_mixup_refuses_an_odd_batch():
    with pytest.raises(DlcvkitError, match="even"):
        _task(cutmix=1.0).augment({"image": torch.zeros(3, 3, 8, 8, dtype=torch.uint8), "label": torch.zeros(3).long()})
