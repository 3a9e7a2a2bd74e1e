"""Fine-tuning settings A–E: which parameters train, which weights load, the A–E table, and inference on a run."""

import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import timm
import tomllib
import torch
import torchvision
from safetensors.torch import load_file

from dlcvkit.augment.common import normalize, to_unit
from dlcvkit.config import apply_override, load_recipe
from dlcvkit.engine.weights import save_weights
from dlcvkit.errors import DlcvkitError
from dlcvkit.tasks.byol import build_byol
from dlcvkit.models.backbones import load_backbone_weights
from dlcvkit.recipes import shipped
from dlcvkit.runs.load import load_run
from dlcvkit.tasks.finetune import (
    SETTINGS,
    FinetuneRecipe,
    FinetuneTask,
    setting_overrides,
)
from dlcvkit.tasks.registry import build_task, task_classes
from tests.cli_runner import dlcvkit, dlcvkit_here

RECIPE = """
task = "finetune"
[data]
img_size = 32
batch_size = 8
num_workers = 0
[model]
backbone = "test_resnet"
head = [16]
[aug]
preset = "flip"
[train]
epochs = 1
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory, office_data):
    """Office-Home-like data, a 'supervised' backbone file (.pth with its 1000-class ImageNet head, as
    torchvision and timm save them) and a BYOL backbone.safetensors, all for test_resnet."""
    root = tmp_path_factory.mktemp("finetune")
    shutil.copytree(office_data, root / "office")
    torch.manual_seed(1)
    torch.save(timm.create_model("test_resnet", num_classes=1000).state_dict(), root / "supervised.pth")
    torch.manual_seed(2)
    byol = build_byol("test_resnet", projection_hidden=16, projection_dim=8, prediction_hidden=16)
    save_weights(byol.encoder.state_dict(), root / "backbone.safetensors", {"backbone": "test_resnet"})
    (root / "recipe.toml").write_text(RECIPE)
    return root


def _task(files, setting: str) -> FinetuneTask:
    recipe = FinetuneRecipe()
    backbone = {"": None, "supervised": files / "supervised.pth", "byol": files / "backbone.safetensors"}
    for item in [f"data.train={json.dumps(str(files / 'office' / 'train'))}", "data.img_size=32",
                 'model.backbone="test_resnet"', "model.head=[16]",
                 *setting_overrides(setting, backbone[SETTINGS[setting].source])]:
        apply_override(recipe, item)
    return build_task(recipe)


def _equal_to_file(backbone, path) -> bool:
    state = torch.load(path, weights_only=True) if str(path).endswith(".pth") else load_file(path)
    own = backbone.state_dict()
    return all(torch.equal(own[k], state[k]) for k in own)


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_settings_build_the_right_trainable_sets(files, setting):
    task = _task(files, setting)
    model = task.build_model().train()
    row = SETTINGS[setting]
    backbone_grad = {p.requires_grad for p in model.backbone.parameters()}
    assert backbone_grad == {not row.freeze}
    assert all(p.requires_grad for p in model.head.parameters())
    assert model.backbone.training is not row.freeze  # a frozen backbone keeps its BN statistics
    optimised = {id(p) for group in task.param_groups(model) for p in group["params"]}
    expected = model.head.parameters() if row.freeze else model.parameters()
    assert optimised == {id(p) for p in expected}
    file = {"supervised": files / "supervised.pth", "byol": files / "backbone.safetensors"}
    for source, path in file.items():
        assert _equal_to_file(model.backbone, path) is (row.source == source)
    # the same head in every setting
    assert [tuple(p.shape) for p in model.head.parameters()] == [(16, 96), (16,), (3, 16), (3,)]


def test_setting_needs_its_backbone_file():
    with pytest.raises(DlcvkitError, match="--backbone"):
        setting_overrides("C", None)
    with pytest.raises(DlcvkitError, match="random init"):
        setting_overrides("A", "x.safetensors")


def test_torchvision_resnet_state_dict_loads_into_timm(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    backbone = timm.create_model("resnet18", num_classes=0).eval()
    load_backbone_weights(backbone, tmp_path / "resnet18.pth")
    reference.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), reference(x))


def test_backbone_of_another_architecture_is_refused(tmp_path):
    torch.save(timm.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    with pytest.raises(DlcvkitError, match="r18.pth.*shape"):
        load_backbone_weights(timm.create_model("test_resnet", num_classes=0), tmp_path / "r18.pth")


# ------------------------------------------------------------------------------------------- real runs (CLI)


@pytest.fixture(scope="module")
def table(files):
    out = files / "settings"
    proc = dlcvkit("finetune", "-r", files / "recipe.toml", "--data", files / "office", "--all-settings",
                   "--supervised", files / "supervised.pth", "--byol", files / "backbone.safetensors",
                   "--tsne-every", 1, "--out", out)
    return out, proc.stdout


def test_all_settings_table(table):
    out, stdout = table
    with open(out / "settings.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["setting"] for r in rows] == list("ABCDE")
    for r in rows:
        records = [json.loads(line) for line in (out / r["setting"] / "metrics.jsonl").read_text().splitlines()]
        best = max(rec["acc"] for rec in records if rec.get("split") == "val")
        assert float(r["validation accuracy"]) == pytest.approx(best, abs=5e-5)
        assert r["pre-training"] == SETTINGS[r["setting"]].pretraining
    assert len((out / "settings.md").read_text().splitlines()) == 2 + 5
    assert "Office-Home fine-tuning" in stdout and "frozen backbone" in stdout
    recipe_d = (out / "D" / "recipe.toml").read_text()
    assert 'setting = "D"' in recipe_d and "freeze_backbone = true" in recipe_d and "supervised.pth" in recipe_d
    assert (out / "C" / "tsne" / "epoch_001.png").stat().st_size > 0


def test_predict_cls_on_a_finetune_run(files, table):
    out, _ = table
    office = files / "office"
    dlcvkit("predict", "cls", "--run", out / "C", "--csv", office / "val.csv", "--images", office / "val",
            "--out", files / "pred.csv")
    with open(office / "val.csv", newline="") as f:
        inputs = list(csv.DictReader(f))
    with open(files / "pred.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["id", "filename", "label"]
        predictions = list(reader)
    assert [(p["id"], p["filename"]) for p in predictions] == [(r["id"], r["filename"]) for r in inputs]
    # independent reference: the run's model applied here
    _, task, model = load_run(out / "C")
    dataset = task.val_dataset()
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    with torch.no_grad():
        expected = model(normalize(to_unit(images))).argmax(1).tolist()
    assert [int(p["label"]) for p in predictions] == expected


def test_label_fraction_trains_a_and_c_on_one_balanced_subset(files, capsys):
    out = files / "semi"
    code, _, err = dlcvkit_here(capsys, "finetune", "-r", files / "recipe.toml", "--data", files / "office",
                                "--all-settings", "--settings", "A,C", "--byol", files / "backbone.safetensors",
                                "--label-fraction", 0.25, "--max-steps", 1, "--out", out)
    assert code in (0, None), err
    with open(out / "settings.csv", newline="") as f:
        assert [r["setting"] for r in csv.DictReader(f)] == ["A", "C"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["A", "C"]
    listed = (out / "A" / "labels_subset.txt").read_text().splitlines()
    assert listed == (out / "C" / "labels_subset.txt").read_text().splitlines()  # one subset, fixed by the seed
    with open(files / "office" / "train.csv", newline="") as f:
        label_of = {r["filename"]: int(r["label"]) for r in csv.DictReader(f)}
    per_class = Counter(label_of.values())
    chosen = Counter(label_of[Path(line).name] for line in listed)
    assert chosen == {c: max(1, round(0.25 * n)) for c, n in per_class.items()}
    assert 'label_fraction = 0.25' in (out / "C" / "recipe.toml").read_text()


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_label_fraction_with_the_cache_trains_exactly_as_without(files, capsys, tmp_path, cache):
    args = ["finetune", "-r", files / "recipe.toml", "--data", files / "office", "--label-fraction", 0.25,
            "--max-steps", 2, "--set", "train.eval_every=0"]
    for name, extra in (("plain", []), ("cached", ["--set", f"data.cache={cache!r}",
                                                   "--set", f"data.cache_dir={str(tmp_path / 'cache')!r}"])):
        code, _, err = dlcvkit_here(capsys, *args, *extra, "--out", tmp_path / name)
        assert code in (0, None), err
    listed = (tmp_path / "plain" / "labels_subset.txt").read_text()
    assert listed == (tmp_path / "cached" / "labels_subset.txt").read_text()
    plain, cached = (load_file(tmp_path / name / "model.safetensors") for name in ("plain", "cached"))
    assert plain.keys() == cached.keys() and all(torch.equal(plain[k], cached[k]) for k in plain)


def test_label_fraction_file_is_the_runs_own(files, capsys, tmp_path):
    args = ["finetune", "-r", files / "recipe.toml", "--data", files / "office", "--max-steps", 1, "--out", tmp_path]
    assert dlcvkit_here(capsys, *args, "--label-fraction", 0.5)[0] in (0, None)
    assert (tmp_path / "labels_subset.txt").is_file()
    code, _, err = dlcvkit_here(capsys, *args, "--overwrite")  # all labels: the old subset's list is removed
    assert code in (0, None), err
    assert not (tmp_path / "labels_subset.txt").exists()
    code, _, err = dlcvkit_here(capsys, *args, "--overwrite", "--label-fraction", 1.5)
    assert code == 2 and "label_fraction (--label-fraction) must be in (0, 1]" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("name", ["byol_resnet50_mini", "byol_report", "demo_byol", "finetune_officehome",
                                  "demo_finetune"])
def test_recipes_load_with_exactly_the_recipe_fields(name):
    task = tomllib.loads(shipped(name).read_text())["task"]
    recipe = load_recipe(shipped(name), task_classes(task)[0])  # unknown keys would raise
    assert recipe.model.backbone == ("resnet18" if name.startswith("demo") else "resnet50")
