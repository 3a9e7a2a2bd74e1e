"""Exact resume: a run stopped mid-epoch and resumed ends bit-identical to an uninterrupted one."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.cli_runner import dlcvkit

# real CLI runs interrupted and resumed (a minute of CPU); tests/engine/test_loop.py checks resume in-process
pytestmark = pytest.mark.slow

RECIPE = """
task = "classify"
[data]
img_size = 32
batch_size = 8
num_workers = 1
[model]
backbone = "test_resnet"
[train]
epochs = 3
grad_accum = 2
log_every = 1
model_ema = 0.9
[schedule]
warmup_steps = 2
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    (root / "recipe.toml").write_text(RECIPE)
    dlcvkit("data", "synth", "cls", "--out", root / "train", "--n", 48, "--size", 32, "--classes", 4)
    dlcvkit("data", "synth", "cls", "--out", root / "val", "--n", 13, "--size", 32, "--classes", 4, "--seed", 1)
    common = ["-r", root / "recipe.toml", "--data", root / "train", "--val", root / "val"]
    # 48 images / batch 8 = 6 micro-batches = 3 optimizer steps per epoch; step 4 is in the middle of epoch 2
    dlcvkit("classify", *common, "--out", root / "whole", "--max-steps", 7)
    dlcvkit("classify", *common, "--out", root / "split", "--max-steps", 4)
    first_half = load_file(root / "split" / "model.safetensors")
    dlcvkit("classify", "--resume", root / "split", "--max-steps", 7)
    return root, first_half


def _losses(run):
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]


def test_resumed_weights_are_bit_identical(runs):
    root, first_half = runs
    whole = load_file(root / "whole" / "model.safetensors")
    resumed = load_file(root / "split" / "model.safetensors")
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    # and the comparison is not vacuous: training moved the weights after the interruption
    assert any(not torch.equal(first_half[k], resumed[k]) for k in first_half if first_half[k].is_floating_point())


def test_resumed_log_continues_the_same_losses(runs):
    root, _ = runs
    assert _losses(root / "whole") == _losses(root / "split")
    assert [s for s, _ in _losses(root / "split")] == list(range(1, 8))


def test_checkpoints_are_complete_and_pruned(runs):
    root, _ = runs
    ckpts = root / "split" / "checkpoints"
    assert (ckpts / "latest").read_text() == "step_00000007"
    steps = sorted(p.name for p in ckpts.iterdir() if p.name.startswith("step_"))
    assert steps == ["step_00000006", "step_00000007"]  # keep_checkpoints = 2
    state = json.loads((ckpts / "step_00000007" / "trainer_state.json").read_text())
    assert state["step"] == 7
    assert (ckpts / "step_00000007" / "model.safetensors").is_file()


def test_resume_refuses_a_changed_recipe(runs):
    root, _ = runs
    proc = dlcvkit("classify", "--resume", root / "split", "--set", "optim.lr=0.5", check=False)
    assert proc.returncode == 2 and "optim.lr" in proc.stderr and "Traceback" not in proc.stderr


def test_new_run_refuses_an_existing_run_folder(runs):
    root, _ = runs
    proc = dlcvkit("classify", "-r", root / "recipe.toml", "--data", root / "train", "--out", root / "whole",
                   check=False)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    assert (root / "whole" / "model.safetensors").is_file()  # nothing written is lost
