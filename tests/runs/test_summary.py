"""`dlcvkit summary`: torchinfo's layer table, whose totals must equal the models' own parameter counts."""

import re

import timm
from typer.testing import CliRunner

from dlcvkit.cli import app
from dlcvkit.config import write_recipe
from dlcvkit.models.classifier import build_classifier
from dlcvkit.tasks.classify import ClassifyRecipe


def _summary(*args) -> tuple[str, dict[str, int]]:
    result = CliRunner().invoke(app, ["summary", *map(str, args)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    counts = {kind: int(n.replace(",", "")) for kind, n in re.findall(r"^(\S+) params: ([\d,]+)$", result.output, re.M)}
    return result.output, counts


def test_timm_model_totals():
    text, counts = _summary("test_resnet", "--input-size", 3, 32, 32)
    total = sum(p.numel() for p in timm.create_model("test_resnet").parameters())
    assert counts == {"Total": total, "Trainable": total, "Non-trainable": 0}
    assert re.search(r"^Total mult-adds \(M\): [\d.]+$", text, re.M) and "Units." not in text  # not the enum's name


def test_run_folder_with_a_frozen_backbone(tmp_path):
    recipe = ClassifyRecipe()
    recipe.model.backbone, recipe.model.num_classes, recipe.model.head = "test_resnet", 3, [8]
    recipe.model.freeze_backbone, recipe.data.img_size = True, 32
    write_recipe(recipe, tmp_path / "recipe.toml")  # the summary needs the recipe only, not trained weights
    text, counts = _summary(tmp_path, "--print")
    model = build_classifier("test_resnet", 3, [8], freeze_backbone=True)
    head = sum(p.numel() for p in model.head.parameters())
    assert counts == {"Total": sum(p.numel() for p in model.parameters()), "Trainable": head,
                      "Non-trainable": sum(p.numel() for p in model.backbone.parameters())}
    assert head == 96 * 8 + 8 + 8 * 3 + 3
    assert re.search(r"Sequential \(head\)\s+\[1, 3\]", text)  # output shapes at the run's 32 px
    assert text.startswith("Classifier(")  # --print: the plain module first


def test_segmenter_totals():
    from dlcvkit.models.segmenters import build_segmenter

    _, counts = _summary("fcn8s:test_resnet", "--task", "seg", "--input-size", 3, 64, 64)
    model = build_segmenter("fcn8s", "test_resnet", num_classes=7)
    assert counts["Total"] == sum(p.numel() for p in model.parameters())


def test_unknown_model_is_a_clear_error():
    result = CliRunner().invoke(app, ["summary", "resnet_does_not_exist"])
    assert "unknown timm model" in str(result.exception)
