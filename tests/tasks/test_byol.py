"""BYOL: the loss, the target network (no gradient, EMA with the cosine τ and BN buffers), per-image views,
1 vs 2 processes, the exported backbone, and the kNN monitor against scikit-learn's kNN."""

import json
import math
from itertools import chain

import kornia.augmentation as K
import numpy as np
import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from dlcvkit.augment.common import normalize, to_unit
from dlcvkit.augment.views import blur_kernel
from dlcvkit.data.labeled import open_labeled
from dlcvkit.data.synth import synth_cls, synth_ssl
from dlcvkit.tasks.byol import BYOL, ByolModel, ByolRecipe, ByolTask, byol_views, regression_loss
from tests.cli_runner import dlcvkit

TAU_BASE = 0.9

RECIPE = f"""
task = "byol"
[data]
img_size = 32
batch_size = 8
num_workers = 0
[model]
backbone = "test_resnet"
projection_hidden = 64
projection_dim = 32
prediction_hidden = 64
tau_base = {TAU_BASE}
[aug]
preset = "none"
[optim]
name = "lars"
lr = 0.2
lr_scaling = "linear"
weight_decay = 1.5e-6
[train]
epochs = 2
grad_accum = 2
log_every = 1
[monitor]
k = 5
"""


def _tiny_task(preset: str = "none") -> ByolTask:
    recipe = ByolRecipe(model=ByolModel("test_resnet", "", 64, 32, 64, TAU_BASE))
    recipe.data.img_size, recipe.aug.preset = 32, preset
    return ByolTask(recipe)


def _images(n: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def tau_k(k: int, total: int) -> float:
    """Grill et al. §3.2, written out independently of the engine."""
    return 1 - (1 - TAU_BASE) * (math.cos(math.pi * k / total) + 1) / 2


def test_regression_loss_hand_values():
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    z = torch.tensor([[0.0, 1.0], [1.0, 1.0], [6.0, 8.0], [-2.0, 0.0]])
    torch.testing.assert_close(regression_loss(p, z), torch.tensor([2.0, 2 - math.sqrt(2), 0.0, 4.0]))


def test_symmetric_loss_of_two_views():
    model = BYOL(nn.Identity(), nn.Identity(), nn.Identity())  # q(g(f(v))) = v: the loss of the raw vectors
    v1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    v2 = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    # sample 0: cos = 1/√2 both ways -> 2(2 − √2); sample 1: cos = −1 both ways -> 8
    assert float(model(v1, v2)) == pytest.approx((2 * (2 - math.sqrt(2)) + 8) / 2)


def test_target_gets_no_gradient_and_no_optimizer_slot():
    task = _tiny_task()
    model = task.build_model().train()
    batch = task.augment({"image": _images()})
    task.loss(model, batch).backward()
    assert all(not p.requires_grad and p.grad is None for p in model.target.parameters())
    online = list(chain(model.online.parameters(), model.predictor.parameters()))
    assert all(p.grad is not None for p in online)
    optimised = {id(p) for group in task.param_groups(model) for p in group["params"]}
    assert optimised == {id(p) for p in online}


def test_target_is_the_ema_of_the_online_network_after_k_steps():
    task = _tiny_task()
    torch.manual_seed(0)
    model = task.build_model().train()
    total = 4
    (ema,) = task.emas(model, total)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    expected = {k: v.clone() for k, v in model.online.state_dict().items()}  # ξ₀ = θ₀
    start = {k: v.clone() for k, v in expected.items()}
    for k in range(3):
        images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(k))
        task.loss(model, task.augment({"image": images})).backward()
        optimizer.step()
        optimizer.zero_grad()
        ema.update(k)
        theta, tau = model.online.state_dict(), tau_k(k, total)
        for name, xi in expected.items():  # floats averaged (BN running stats too), counters copied
            expected[name] = tau * xi + (1 - tau) * theta[name] if xi.is_floating_point() else theta[name].clone()
    target = model.target.state_dict()
    for name, xi in expected.items():
        torch.testing.assert_close(target[name], xi, rtol=1e-5, atol=1e-6, msg=name)
    moved = [n for n in expected if "running_mean" in n and not torch.equal(target[n], start[n])]
    assert moved, "BN running statistics of the target did not move: the check above would be vacuous"
    assert int(target["encoder.bn1.num_batches_tracked"]) == 6  # online BN counts 2 views x 3 steps, copied


def test_blur_kernel_is_about_a_tenth_of_the_image():
    assert [blur_kernel(s) for s in (224, 128, 64, 32)] == [23, 13, 7, 5]  # paper: 23 px at 224


def _crop_boxes(view: nn.Module) -> torch.Tensor:
    crops = [m for m in view.modules() if isinstance(m, K.AugmentationSequential)]
    params = [p for seq in crops for p in seq._params if p.name.startswith("RandomResizedCrop")]
    return params[0].data["src"]


@pytest.mark.parametrize("preset", ["paper", "report"])
def test_views_draw_parameters_per_image(preset):
    torch.manual_seed(0)
    views = byol_views(preset, 32)
    images = torch.rand(1, 3, 32, 32).repeat(8, 1, 1, 1)  # 8 copies of one image
    v1, v2 = views(images)
    assert v1.shape == v2.shape == (8, 3, 32, 32)
    boxes = _crop_boxes(views.pipelines[0])
    assert len({tuple(b.flatten().tolist()) for b in boxes}) == 8  # 8 different crops in one batch
    assert not torch.equal(v1[0], v1[1]) and not torch.equal(v1, v2)


def test_paper_views_are_asymmetric():
    views = byol_views("paper", 64)

    def p_of(view, kind):
        return next(m.p for m in view.modules() if isinstance(m, kind))

    assert (p_of(views.pipelines[0], K.RandomGaussianBlur), p_of(views.pipelines[1], K.RandomGaussianBlur)) == (1.0, 0.1)
    assert (p_of(views.pipelines[0], K.RandomSolarize), p_of(views.pipelines[1], K.RandomSolarize)) == (0.0, 0.2)


def test_grey_views_keep_grey_images_grey_and_crop_at_least_a_fifth():
    torch.manual_seed(0)
    views = byol_views("grey", 32)
    images = torch.rand(64, 1, 32, 32).repeat(1, 3, 1, 1)  # grey images, decoded as RGB like the readers do
    for view in views(images):
        assert torch.allclose(view[:, 0], view[:, 1]) and torch.allclose(view[:, 1], view[:, 2])
    boxes = _crop_boxes(views.pipelines[0])  # corners (b 4 2): the crop's area over the image's
    sides = boxes[:, 2] - boxes[:, 0] + 1
    assert (sides.prod(dim=1) / 32**2).min() >= 0.2 - 0.02  # kornia rounds the box to whole pixels
    assert not torch.equal(*views(images))


# ------------------------------------------------------------------------------------------- real runs (CLI)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("byol")
    (root / "recipe.toml").write_text(RECIPE)
    synth_ssl(root / "ssl", n=32, size=32)
    synth_cls(root / "monitor", n=40, size=32, classes=3)
    common = ["byol", "-r", root / "recipe.toml", "--data", root / "ssl", "--monitor", root / "monitor"]
    dlcvkit(*common, "--out", root / "one")
    dlcvkit("launch", "--procs", 2, "--", *common, "--out", root / "two")
    return root


def _log(run, split=None):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("split") == split]


def test_two_processes_give_the_single_process_losses(runs):
    one, two = _log(runs / "one"), _log(runs / "two")
    assert [r["step"] for r in one] == [1, 2, 3, 4]
    assert two[0]["loss"] == pytest.approx(one[0]["loss"], rel=1e-5)  # step 1: same global batch, SyncBN
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-4)


def test_tau_follows_the_cosine_schedule_in_optimizer_steps(runs):
    # 32 images / batch 8 = 4 micro-batches = 2 optimizer steps per epoch (grad_accum 2): K = 4, not 8
    taus = [r["tau"] for r in _log(runs / "one")]
    assert taus == pytest.approx([tau_k(k, 4) for k in range(4)])


def test_exported_backbone_is_the_online_encoder_and_loads_into_timm(runs):
    run = runs / "one"
    exported = load_file(run / "backbone.safetensors")
    full = load_file(run / "model.safetensors")
    online = {k.removeprefix("online.encoder."): v for k, v in full.items() if k.startswith("online.encoder.")}
    assert exported.keys() == online.keys()
    assert all(torch.equal(exported[k], online[k]) for k in online)
    assert any(not torch.equal(exported[k], full[f"target.encoder.{k}"]) for k in online)  # not the target
    net = timm.create_model("test_resnet", num_classes=0)
    net.load_state_dict(exported)  # strict
    with safe_open(str(run / "backbone.safetensors"), "pt") as f:
        assert f.metadata()["backbone"] == "test_resnet"


def test_the_monitor_knn_equals_scikit_learns_on_the_same_features(runs):
    from sklearn.neighbors import KNeighborsClassifier

    net = timm.create_model("test_resnet", num_classes=0).eval()
    net.load_state_dict(load_file(runs / "one" / "backbone.safetensors"))  # the online encoder at the last step
    monitor = open_labeled(runs / "monitor", size=32)
    with torch.no_grad():  # the run's evaluation batches: 8 consecutive images (data.batch_size)
        batches = [torch.stack([monitor[i]["image"] for i in range(s, min(s + 8, 40))]) for s in range(0, 40, 8)]
        features = torch.cat([net(normalize(to_unit(b))) for b in batches]).numpy()
    labels = np.array([monitor[i]["label"] for i in range(40)])
    query = np.arange(40) % 5 == 4
    knn = KNeighborsClassifier(n_neighbors=5, metric="cosine", algorithm="brute", weights="uniform")
    expected = knn.fit(features[~query], labels[~query]).score(features[query], labels[query])
    val = _log(runs / "one", "val")
    assert [(r["step"], r["epoch"]) for r in val] == [(2, 1), (4, 2)]  # every epoch (train.eval_every = 1)
    assert val[-1]["knn_acc"] == expected


def test_two_processes_give_the_single_process_monitor(runs):
    assert [r["knn_acc"] for r in _log(runs / "two", "val")] == [r["knn_acc"] for r in _log(runs / "one", "val")]
