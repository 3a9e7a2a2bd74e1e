"""DINO: the loss and centering against lightly's DINOLoss and against main_dino.py's loops written out here, the
teacher temperature schedule, the head, the multi-crop views, the EMA teacher, and real runs: the exported
backbone, --cache, exact resume, 1 vs 2 processes."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from lightly.loss import DINOLoss
from safetensors.torch import load_file
from torch import nn

from dlcvkit.data.synth import synth_ssl
from dlcvkit.errors import DlcvkitError
from dlcvkit.tasks.dino import (DINO, DinoHead, DinoModel, DinoRecipe, DinoTask, build_dino, default_local_size,
                                teacher_temperature)
from tests.cli_runner import dlcvkit, dlcvkit_here


class RawHead(nn.Module):
    """A head that passes the vectors through: DINO's loss and centering of the given outputs."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.last_layer = nn.Linear(1, k)

    def forward(self, x, train_last_layer=True):
        return x


def _outputs(seed: int, crops: int = 6, b: int = 5, k: int = 16) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, k, generator=g) * 3 for _ in range(crops)]


def test_loss_and_center_equal_lightlys_dino_loss():
    model = DINO(nn.Identity(), RawHead(16), student_temp=0.1, center_momentum=0.9)
    reference = DINOLoss(output_dim=16, warmup_teacher_temp=0.05, teacher_temp=0.05, warmup_teacher_temp_epochs=1,
                         student_temp=0.1, center_momentum=0.9)
    for seed in range(3):  # from the second step on, the center of the earlier ones enters the loss
        crops = _outputs(seed)
        loss = model(crops, teacher_temp=0.05)
        expected = reference(teacher_out=crops[:2], student_out=crops, teacher_temp=0.05)
        assert float(loss) == pytest.approx(float(expected), rel=1e-6)
        torch.testing.assert_close(model.center, reference.center.reshape(1, 16))
    assert model.center.abs().sum() > 0


def test_loss_and_center_are_main_dinos_loops():
    """main_dino.py's DINOLoss.forward and update_center, written out with its loops."""
    model = DINO(nn.Identity(), RawHead(16), student_temp=0.1, center_momentum=0.8)
    center = torch.randn(1, 16, generator=torch.Generator().manual_seed(9))
    model.center.copy_(center)
    crops = _outputs(4, crops=5)
    teacher = [F.softmax((t - center) / 0.06, dim=-1) for t in crops[:2]]
    total, terms = 0.0, 0
    for i, q in enumerate(teacher):
        for v, s in enumerate(crops):
            if v != i:
                total += torch.sum(-q * F.log_softmax(s / 0.1, dim=-1), dim=-1).mean()
                terms += 1
    assert terms == 2 * 5 - 2
    assert float(model(crops, teacher_temp=0.06)) == pytest.approx(float(total / terms), rel=1e-6)
    batch_center = torch.cat(crops[:2]).sum(dim=0, keepdim=True) / 10  # eq. 4: over the 2 crops of 5 images
    torch.testing.assert_close(model.center, center * 0.8 + batch_center * 0.2)


def test_the_loss_is_float32_under_mixed_precision():
    model = DINO(nn.Identity(), RawHead(16))
    crops = _outputs(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model([c.bfloat16() for c in crops], teacher_temp=0.04)
    reference = DINO(nn.Identity(), RawHead(16))([c.bfloat16().float() for c in crops], teacher_temp=0.04)
    assert loss.dtype == torch.float32 and float(loss) == pytest.approx(float(reference), rel=1e-6)


def test_teacher_temperature_is_main_dinos_schedule():
    schedule = np.concatenate((np.linspace(0.04, 0.07, 30), np.ones(70) * 0.07))  # main_dino.py
    assert [teacher_temperature(e, 0.04, 0.07, 30) for e in range(100)] == pytest.approx(schedule.tolist())
    assert teacher_temperature(0, 0.04, 0.07, 1) == 0.04 and teacher_temperature(1, 0.04, 0.07, 1) == 0.07
    assert {teacher_temperature(e, 0.04, 0.07, 0) for e in range(3)} == {0.07}


def _task(**aug) -> DinoTask:
    recipe = DinoRecipe(model=DinoModel("test_resnet", out_dim=32, hidden=64, bottleneck=16, tau_base=0.9))
    recipe.data.img_size = 32
    for key, value in aug.items():
        setattr(recipe.aug, key, value)
    return DinoTask(DinoTask.resolve(recipe))


def test_the_task_takes_the_temperature_and_the_freeze_from_the_epoch_of_the_context():
    task = _task()
    task.recipe.model.warmup_teacher_temp_epochs, task.recipe.model.freeze_last_layer = 3, 2
    calls = []
    for epoch in range(4):
        task.context = SimpleNamespace(epoch=epoch)
        task.loss(lambda views, temp, train_last_layer: calls.append((temp, train_last_layer)), {"views": []})
    assert [temp for temp, _ in calls] == pytest.approx([0.04, 0.055, 0.07, 0.07])
    assert [train_last_layer for _, train_last_layer in calls] == [False, False, True, True]


@pytest.mark.parametrize("img_size, local", [(224, 96), (128, 56), (32, 16), (8, 8)])
def test_local_crops_are_96_of_224_to_a_multiple_of_8(img_size, local):
    assert default_local_size(img_size) == local


def test_multi_crop_views_two_globals_then_the_locals():
    torch.manual_seed(0)
    task = _task(preset="paper", local_crops=3)
    assert task.recipe.aug.local_size == 16  # resolved, so that the run's recipe.toml records it
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    views = task.augment({"image": images})["views"]
    assert [tuple(v.shape) for v in views] == [(4, 3, 32, 32)] * 2 + [(4, 3, 16, 16)] * 3
    assert not torch.equal(views[2], views[3])  # each local crop drawn on its own
    assert len(_task(preset="none", local_crops=0).augment({"image": images})["views"]) == 2


def test_a_crop_scale_that_is_not_a_range_is_refused():
    with pytest.raises(DlcvkitError, match=r"recipe key 'aug.local_scale' must be \[low, high\]"):
        _task(local_scale=[0.4, 0.05])


def test_head_last_layer_is_weight_normalised_to_one_and_freezable():
    head = DinoHead(8, 32, hidden=16, bottleneck=4)
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.equal(g, torch.ones(32, 1))
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(32))
    x = torch.randn(6, 8)
    head(x, train_last_layer=False).sum().backward()
    v = head.last_layer.parametrizations.weight.original1
    assert torch.equal(v.grad, torch.zeros_like(v)) and head.mlp[0].weight.grad.abs().sum() > 0
    head.zero_grad()
    head(x).sum().backward()
    assert v.grad.abs().sum() > 0
    assert DinoHead(8, 32, 16, 4, norm_last_layer=False).last_layer.parametrizations.weight.original0.requires_grad


@pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*is deprecated:FutureWarning")  # lightly's head
@pytest.mark.parametrize("bn", [False, True])
def test_head_computes_lightlys_dino_projection_head(bn):
    from lightly.models.modules.heads import DINOProjectionHead

    torch.manual_seed(0)
    head, reference = DinoHead(8, 32, 16, 4, bn=bn), DINOProjectionHead(8, 16, 4, 32, batch_norm=bn)
    ours = head.state_dict()
    weights = {k.replace("mlp.", "layers."): v for k, v in ours.items() if k.startswith("mlp.")}
    weights["last_layer.weight_g"] = ours["last_layer.parametrizations.weight.original0"]
    weights["last_layer.weight_v"] = ours["last_layer.parametrizations.weight.original1"]
    if bn:  # lightly's Linear layers before a BatchNorm have no bias; ours have one, which BatchNorm cancels
        weights = {k: v for k, v in weights.items() if k not in ("layers.0.bias", "layers.3.bias")}
    reference.load_state_dict(weights)
    x = torch.randn(6, 8)
    torch.testing.assert_close(head(x), reference(x))


def test_the_teacher_is_the_cosine_ema_of_the_student():
    torch.manual_seed(0)
    task = _task(preset="none", local_crops=2)
    task.context = SimpleNamespace(epoch=1)
    model = task.build_model().train()
    (ema,) = task.emas(model, 4)
    student0 = {k: v.clone() for k, v in model.student.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    task.loss(model, task.augment({"image": images})).backward()
    optimizer.step()
    ema.update(1)
    tau = 1 - (1 - 0.9) * (math.cos(math.pi * 1 / 4) + 1) / 2  # λ at step 1 of 4 (BYOL §3.2, DINO §3.1)
    student, teacher = model.student.state_dict(), model.teacher.state_dict()
    moved = [k for k in student0 if k.endswith("weight") and not torch.equal(student[k], student0[k])]
    assert moved
    for name in moved:
        torch.testing.assert_close(teacher[name], tau * student0[name] + (1 - tau) * student[name])


def test_a_vit_takes_the_local_crops_and_its_export_loads_into_timm():
    model = build_dino(DinoModel("vit_small_patch16_224", out_dim=32, hidden=64, bottleneck=16))
    crops = [torch.rand(2, 3, 32, 32)] * 2 + [torch.rand(2, 3, 16, 16)] * 2
    assert torch.isfinite(model(crops, teacher_temp=0.04))
    timm.create_model("vit_small_patch16_224", num_classes=0).load_state_dict(model.encoder.state_dict())


# ------------------------------------------------------------------------------------------- real runs (CLI)

RECIPE = """
task = "dino"
[data]
img_size = 32
batch_size = 8
num_workers = 0
[model]
backbone = "test_resnet"
out_dim = 64
hidden = 32
bottleneck = 16
tau_base = 0.9
warmup_teacher_temp_epochs = 2
freeze_last_layer = 1
[aug]
preset = "{preset}"
local_crops = 2
[optim]
name = "adamw"
lr = 1e-3
[train]
epochs = 3
log_every = 1
"""


def _losses(run):
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_demo_recipe_with_a_memory_cache_exports_a_backbone_timm_loads(synth_data, tmp_path, capsys):
    code, _, err = dlcvkit_here(capsys, "dino", "-r", "demo_dino", "--data", synth_data("ssl", n=16, size=32),
                                "--out", tmp_path / "run", "--max-steps", 2, "--cache", "memory",
                                "--set", "data.batch_size=8", "--set", "data.num_workers=0", "--set", "train.log_every=1")
    assert code == 0, err
    exported = load_file(tmp_path / "run" / "backbone.safetensors")
    full = load_file(tmp_path / "run" / "model.safetensors")
    assert all(torch.equal(v, full[f"teacher.encoder.{k}"]) for k, v in exported.items())  # the teacher's
    timm.create_model("resnet18", num_classes=0).load_state_dict(exported)  # strict
    assert len(_losses(tmp_path / "run")) == 2


def test_resume_continues_exactly(tmp_path, capsys):
    # 24 images / batch 8: 3 steps an epoch; the run stops after step 4, in epoch 2 (the temperature warms up over
    # epochs 0-1, the last layer learns from epoch 1 on: both must come from the resumed step)
    (tmp_path / "recipe.toml").write_text(RECIPE.format(preset="paper"))
    synth_ssl(tmp_path / "ssl", n=24, size=32)
    common = ["-r", tmp_path / "recipe.toml", "--data", tmp_path / "ssl"]
    for out, steps in (("whole", 6), ("split", 4)):
        assert dlcvkit_here(capsys, "dino", *common, "--out", tmp_path / out, "--max-steps", steps)[0] == 0
    assert dlcvkit_here(capsys, "dino", "--resume", tmp_path / "split", "--max-steps", 6)[0] == 0
    whole, split = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "split" / "model.safetensors")
    assert whole.keys() == split.keys() and all(torch.equal(whole[k], split[k]) for k in whole)
    assert whole["center"].abs().sum() > 0
    assert _losses(tmp_path / "whole") == _losses(tmp_path / "split")


@pytest.mark.slow
def test_two_processes_give_the_single_process_losses_and_center(tmp_path):
    (tmp_path / "recipe.toml").write_text(RECIPE.format(preset="none"))
    synth_ssl(tmp_path / "ssl", n=32, size=32)
    common = ["dino", "-r", tmp_path / "recipe.toml", "--data", tmp_path / "ssl", "--max-steps", 5]
    dlcvkit(*common, "--out", tmp_path / "one")
    dlcvkit("launch", "--procs", 2, "--", *common, "--out", tmp_path / "two")
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(one) == 5 and two == pytest.approx(one, rel=1e-4)
    center_one = load_file(tmp_path / "one" / "model.safetensors")["center"]
    center_two = load_file(tmp_path / "two" / "model.safetensors")["center"]
    assert center_one.abs().sum() > 0
    torch.testing.assert_close(center_two, center_one, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("key, value, bounds", [("aug.local_crops", -1, "between 0 and 64"),
                                                ("model.out_dim", 0, "between 1 and 1000000"),
                                                ("model.student_temp", 0, "at least 0.0001")])
def test_sizes_and_temperatures_out_of_range_are_refused_naming_the_key(capsys, tmp_path, key, value, bounds):
    code, _, err = dlcvkit_here(capsys, "dino", "-r", "demo_dino", "--data", tmp_path, "--out", tmp_path / "run",
                                "--set", f"{key}={value}")
    assert code == 2 and f"recipe key '{key}' must be {bounds}, got {value}" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
