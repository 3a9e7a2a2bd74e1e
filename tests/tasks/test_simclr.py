"""SimCLR: NT-Xent by hand and against lightly's NTXentLoss (1 process and a real 2-process gloo group, gathered
with gradients), the views of each preset, LARS excluding biases and norms, the CLI run and its exported backbone,
exact resume, and 1 vs 2 processes training alike on the same global batch."""

import json
import math

import kornia.augmentation as K
import pytest
import timm
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from accelerate.state import AcceleratorState
from lightly.loss import NTXentLoss
from safetensors import safe_open
from safetensors.torch import load_file
from timm.optim import Lars

from dlcvkit.data.synth import synth_ssl
from dlcvkit.engine.optim import build_optimizer
from dlcvkit.tasks.simclr import SimclrModel, SimclrRecipe, SimclrTask, nt_xent, simclr_views
from tests.cli_runner import dlcvkit, dlcvkit_here

RECIPE = """
task = "simclr"
[data]
img_size = 32
batch_size = 8
num_workers = 0
[model]
backbone = "test_resnet"
projection_hidden = 32
projection_dim = 16
temperature = 0.5
[aug]
preset = "{preset}"
[optim]
name = "lars"
lr = 0.3
lr_scaling = "linear"
weight_decay = 1e-6
[train]
epochs = 2
log_every = 1
tensorboard = false
"""


def _embeddings(n: int = 8, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


# ------------------------------------------------------------------------------------------------ the loss


def test_nt_xent_of_two_by_two_vectors_by_hand():
    # unit directions after normalisation: view 1 = (1,0), (0,1); view 2 = (1,0), (-1,0); τ = 0.5 doubles the cosines
    z1 = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    z2 = torch.tensor([[5.0, 0.0], [-1.0, 0.0]])
    e = math.e
    expected = [
        math.log(1 + e**-2 + e**-4),  # z1[0]: positive cos 1; negatives z1[1] (cos 0), z2[1] (cos -1)
        math.log(3),  # z1[1]: positive z2[1] cos 0; negatives z1[0], z2[0] cos 0
        math.log(1 + e**-2 + e**-4),  # z2[0]: positive z1[0] cos 1; negatives z1[1] (0), z2[1] (-1)
        math.log(1 + 2 * e**-2),  # z2[1]: positive z1[1] cos 0; negatives z1[0], z2[0] cos -1
    ]
    assert float(nt_xent(z1, z2, 0.5)) == pytest.approx(sum(expected) / 4, rel=1e-6)


def test_nt_xent_equals_lightlys_with_its_gradients():
    z1, z2 = (z.requires_grad_() for z in _embeddings())
    ours = nt_xent(z1, z2, 0.2)
    ours_grads = torch.autograd.grad(ours, (z1, z2))
    theirs = NTXentLoss(temperature=0.2)(z1, z2)
    theirs_grads = torch.autograd.grad(theirs, (z1, z2))
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
    for a, b in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def _gather_worker(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        z1, z2 = _embeddings()
        b = len(z1) // world
        results = {}
        for name, loss_fn in [("ours", lambda a, c: nt_xent(a, c, 0.2)),
                              ("lightly", NTXentLoss(temperature=0.2, gather_distributed=True))]:
            mine = [z[rank * b:(rank + 1) * b].clone().requires_grad_() for z in (z1, z2)]
            loss = loss_fn(*mine)
            loss.backward()
            results[name] = (loss.detach(), mine[0].grad, mine[1].grad)
        torch.save(results, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_nt_xent_equals_lightlys_and_the_one_process_gradient(tmp_path):
    mp.spawn(_gather_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    for result in ranks:  # per process: the same loss and embedding gradients as lightly's GatherLayer
        for ours, theirs in zip(result["ours"], result["lightly"]):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
    # the mean of the processes' losses is the one-process loss of the global batch, and each process's gradient
    # (that of the sum of both losses) is 2x the one-process gradient of its embeddings (DDP halves it)
    z1, z2 = (z.requires_grad_() for z in _embeddings())
    whole = nt_xent(z1, z2, 0.2)
    whole.backward()
    assert float(ranks[0]["ours"][0] + ranks[1]["ours"][0]) / 2 == pytest.approx(float(whole.detach()), rel=1e-6)
    assert float(ranks[0]["ours"][0]) != pytest.approx(float(ranks[1]["ours"][0]), rel=1e-3)  # not vacuous
    for view, z in ((1, z1), (2, z2)):
        local = torch.cat([ranks[r]["ours"][view] for r in range(2)])
        torch.testing.assert_close(local / 2, z.grad, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------------ the views


def _modules(views, kind):
    return [m for m in views.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_paper_views_follow_appendix_a(strength):
    views = simclr_views("paper", 64, strength, blur_p=0.5)
    assert views.counts == [2]  # two views of one family, drawn in one call
    (jitter,) = _modules(views, K.ColorJitter)
    s = strength
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue, jitter.p) == pytest.approx(
        (0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, 0.8))
    assert _modules(views, K.RandomGrayscale)[0].p == 0.2
    assert _modules(views, K.RandomGaussianBlur)[0].p == 0.5
    assert _modules(views, K.RandomSolarize)[0].p == 0.0
    assert tuple(_modules(views, K.RandomResizedCrop)[0]._param_generator.scale) == (0.08, 1.0)


def test_two_views_differ_per_image_and_gray_presets_stay_grey():
    torch.manual_seed(0)
    colour = torch.rand(16, 3, 32, 32)
    grey = torch.rand(16, 1, 32, 32).repeat(1, 3, 1, 1)
    for preset, images in (("paper", colour), ("paper_gray", colour), ("grey", grey)):
        v1, v2 = simclr_views(preset, 32, blur_p=0.0)(images)
        assert v1.shape == v2.shape == (16, 3, 32, 32) and not torch.equal(v1, v2)
        if preset != "paper":
            for view in (v1, v2):
                assert torch.allclose(view[:, 0], view[:, 1]) and torch.allclose(view[:, 1], view[:, 2])
    v1, v2 = simclr_views("none", 32)(colour)
    assert torch.equal(v1, colour) and torch.equal(v2, colour)


# ------------------------------------------------------------------------------------------------ the optimizer


def test_lars_is_timms_and_leaves_biases_and_norms_unadapted_and_undecayed():
    recipe = SimclrRecipe(model=SimclrModel("test_resnet", "", 32, 16))
    recipe.optim.name, recipe.optim.lr, recipe.optim.weight_decay = "lars", 0.3, 1e-6
    recipe.optim.lr_scaling = "linear"
    task = SimclrTask(recipe)
    model = task.build_model()
    optimizer = build_optimizer(recipe.optim, task.param_groups(model), 512)  # lr 0.3 x 512 / 256
    assert type(optimizer) is Lars
    decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 1e-6 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decay) == (p.ndim > 1), name  # biases, BN and the head's BN: no decay, no adaptation
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: torch.full_like(p, 0.01) for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.grad = grads[n].clone()
    optimizer.step()
    params = dict(model.named_parameters())
    bias = "projector.0.bias"  # plain SGD: lr x grad
    torch.testing.assert_close(params[bias].detach(), before[bias] - 0.6 * grads[bias])
    weight = "projector.0.weight"  # LARS: lr x η ‖w‖ / (‖g‖ + wd ‖w‖) x (g + wd w), η = 0.001 (§B.1)
    w, g = before[weight], grads[weight]
    ratio = 0.001 * w.norm() / (g.norm() + 1e-6 * w.norm())
    torch.testing.assert_close(params[weight].detach(), w - 0.6 * ratio * (g + 1e-6 * w))


# ------------------------------------------------------------------------------------------------ real runs


def test_cli_run_with_a_memory_cache_exports_a_timm_backbone_and_monitors(capsys, synth_data, tmp_path):
    data, monitor = synth_data("ssl", n=32, size=32), synth_data("cls", n=20, size=32, classes=2)
    code, out, err = dlcvkit_here(capsys, "simclr", "-r", "demo_simclr", "--data", data, "--monitor", monitor,
                                  "--out", tmp_path / "run", "--max-steps", 2, "--cache", "memory",
                                  "--set", "data.batch_size=32", "--set", "data.num_workers=0")
    assert code == 0, err
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 2 and all(0 < x < math.log(2 * 32) + 1 for x in losses)  # near log(2b - 1) at first
    assert [r["step"] for r in records if "knn_acc" in r] == [1, 2]  # 32 images / batch 32: one step per epoch
    exported = load_file(run / "backbone.safetensors")
    full = load_file(run / "model.safetensors")
    encoder = {k.removeprefix("encoder."): v for k, v in full.items() if k.startswith("encoder.")}
    assert exported.keys() == encoder.keys() and all(torch.equal(exported[k], encoder[k]) for k in encoder)
    timm.create_model("resnet18", num_classes=0).load_state_dict(exported)  # strict
    with safe_open(str(run / "backbone.safetensors"), "pt") as f:
        assert f.metadata()["backbone"] == "resnet18" and f.metadata()["method"] == "simclr"


def test_temperature_out_of_range_is_one_line(capsys, synth_data, tmp_path):
    code, out, err = dlcvkit_here(capsys, "simclr", "-r", "demo_simclr", "--data", synth_data("ssl", n=64, size=32),
                                  "--set", "model.temperature=0", "--out", tmp_path / "run")
    assert code == 2 and out == "" and not (tmp_path / "run").exists()
    assert err.startswith("dlcvkit: error: ") and err.count("\n") == 1
    assert err.endswith("demo_simclr.toml with --set: recipe key 'model.temperature' must be between 0.001 and 100, "
                        "got 0.0\n")


def _cli(capsys, *args) -> None:
    AcceleratorState._reset_state(reset_partial_state=True)  # each run builds its own Accelerator
    code, _, err = dlcvkit_here(capsys, *args)
    assert code == 0, err


def _losses(run):
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]


def test_resume_after_max_steps_equals_the_uninterrupted_run(capsys, synth_data, tmp_path):
    (tmp_path / "recipe.toml").write_text(RECIPE.format(preset="paper_gray"))  # random views: their RNG resumes too
    common = ["simclr", "-r", tmp_path / "recipe.toml", "--data", synth_data("ssl", n=24, size=32)]
    # 24 images / batch 8 = 3 steps per epoch: the split at step 2 is in the middle of epoch 1
    _cli(capsys, *common, "--out", tmp_path / "whole", "--max-steps", 4)
    _cli(capsys, *common, "--out", tmp_path / "split", "--max-steps", 2)
    _cli(capsys, "simclr", "--resume", tmp_path / "split", "--max-steps", 4)
    assert _losses(tmp_path / "split") == _losses(tmp_path / "whole")
    whole, resumed = (load_file(tmp_path / run / "model.safetensors") for run in ("whole", "split"))
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


@pytest.mark.slow
def test_two_processes_train_as_one_on_the_same_global_batch(tmp_path):
    (tmp_path / "recipe.toml").write_text(RECIPE.format(preset="none"))  # views drawn per process: off
    synth_ssl(tmp_path / "ssl", n=32, size=32)
    common = ["simclr", "-r", tmp_path / "recipe.toml", "--data", tmp_path / "ssl", "--max-steps", 5]
    dlcvkit(*common, "--out", tmp_path / "one")
    dlcvkit("launch", "--procs", 2, "--", *common, "--out", tmp_path / "two")  # train.sync_bn: global BN
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert [s for s, _ in one] == [1, 2, 3, 4, 5]
    # without the gathered negatives each process would contrast 2 x 4 images: about log 7, not log 15, at step 1
    assert two[0][1] == pytest.approx(one[0][1], rel=1e-5)
    assert [x for _, x in two] == pytest.approx([x for _, x in one], rel=1e-4)
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4, msg=lambda m: f"{key}: {m}")
