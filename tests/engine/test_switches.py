"""The recipe switches that change code paths, for every task, on the CPU: `train.precision = "bf16"` (CPU
autocast is real), `train.channels_last`, `train.compile` (inductor), `train.grad_accum` and `train.sync_bn` on
2 processes. Each switched run must finish with finite losses; a switch that should not change the maths
(channels-last, compile, accumulation of a batch-independent model, SyncBN over the same global batch) must
give the plain run's losses and weights within the tolerances below.

In-process runs of the engine (`fit`) except SyncBN, which needs a real 2-process group (`dlcvkit launch`).
"""

import os
import sys
import traceback

import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from dlcvkit.config import load_recipe
from dlcvkit.data.synth import synth_cls, synth_officehome, synth_seg, synth_ssl
from dlcvkit.engine.ema import momentum_schedule
from dlcvkit.engine.loop import fit
from dlcvkit.engine.runlog import RunLog, read_metrics
from dlcvkit.engine.weights import save_weights
from dlcvkit.models.backbones import create_backbone
from dlcvkit.tasks.registry import build_task, task_classes
from tests.cli_runner import dlcvkit

STEPS = 3
# Every task: 24 training samples, batch 8 (4 for segmentation) = 3 optimizer steps per epoch; plain SGD/LARS
# so that a rounding difference in a gradient stays a rounding difference in the weights (Adam would scale a
# near-zero gradient's noise up to a whole step of lr).
COMMON = """
[data]
img_size = 32
num_workers = 0
[train]
epochs = 2
log_every = 1
tensorboard = false
"""
RECIPES = {
    "classify": """task = "classify"
[model]
backbone = "test_resnet"
[aug]
preset = "standard"
label_smoothing = 0.1
[optim]
name = "sgd"
lr = 0.05
""",
    "segment": """task = "segment"
[model]
name = "fcn8s"
backbone = "test_resnet"
fcn_width = 16
[aug]
flips = true
rot90 = true
[optim]
name = "sgd"
lr = 0.05
""",
    "byol": """task = "byol"
[model]
backbone = "test_resnet"
projection_hidden = 32
projection_dim = 16
prediction_hidden = 32
tau_base = 0.9
[aug]
preset = "paper"
[optim]
name = "lars"
lr = 0.2
weight_decay = 1.5e-6
""",
    "simclr": """task = "simclr"
[model]
backbone = "test_resnet"
projection_hidden = 32
projection_dim = 16
[aug]
preset = "paper"
[optim]
name = "lars"
lr = 0.2
weight_decay = 1e-6
""",
    "finetune": """task = "finetune"
setting = "E"
[model]
backbone = "test_resnet"
freeze_backbone = true
head = [16]
dropout = 0.1
[aug]
preset = "flip"
[optim]
name = "sgd"
lr = 0.05
""",
}
BATCH = {"classify": 8, "segment": 4, "byol": 8, "simclr": 8, "finetune": 8}
TASKS = list(RECIPES)
# Augmentations off: their random draws are per process, so 1 and 2 processes would train on different views.
NO_AUG = {"classify": ["aug.preset=none"], "segment": ["aug.flips=false", "aug.rot90=false"],
          "byol": ["aug.preset=none"], "simclr": ["aug.preset=none"], "finetune": ["aug.preset=none"]}
# Dropout off where a recipe key sets it: a second process (its own seed) and inductor (its own RNG) draw other
# masks. FCN's head has a fixed Dropout2d, which inductor leaves to torch's RNG (see the SyncBN test).
NO_DROPOUT = {"finetune": ["model.dropout=0.0"]}

# Tolerances. Same maths, other kernels (channels-last, inductor, SyncBN's all-reduced statistics): float32
# rounding only, relative 1e-4 on the logged losses, 1e-5 absolute (+ 1e-4 relative) on weights after 3 steps.
SAME_MATHS = {"loss_rtol": 1e-4, "weight_atol": 1e-5, "weight_rtol": 1e-4}
# bf16 autocast keeps 8 significant bits: the first step (same weights, same batch) within 3% of float32.
BF16_FIRST_LOSS_RTOL = 3e-2
BF16_STATISTICS = {"weight_atol": 1e-3, "weight_rtol": 3e-2}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("switches")
    synth_cls(root / "cls", n=24, size=32, classes=4)
    synth_seg(root / "seg", n=12, size=32)
    synth_ssl(root / "ssl", n=24, size=32)
    synth_officehome(root / "office", n=40, size=32, classes=4)
    torch.manual_seed(2)
    save_weights(create_backbone("test_resnet", num_classes=0).state_dict(), root / "byol_backbone.safetensors",
                 {"backbone": "test_resnet"})
    folders = {"classify": "cls", "segment": "seg", "byol": "ssl", "simclr": "ssl", "finetune": "office/train"}
    for task, text in RECIPES.items():
        extra = f'pretrained = "{root / "byol_backbone.safetensors"}"\n' if task == "finetune" else ""
        recipe = text.replace("[model]\n", f"[model]\n{extra}") + COMMON.replace(
            "[data]\n", f'[data]\ntrain = "{root / folders[task]}"\nbatch_size = {BATCH[task]}\n')
        (root / f"{task}.toml").write_text(recipe)
    return root


def train(data, task: str, name: str, overrides=(), steps: int = STEPS) -> dict:
    """`fit` in this process on the task's recipe with `--set`-style overrides: losses, taus and weights."""
    recipe = load_recipe(data / f"{task}.toml", task_classes(task)[0], list(overrides))
    run_dir = data / "runs" / task / name
    AcceleratorState._reset_state(reset_partial_state=True)  # each run builds its own Accelerator
    fit(build_task(recipe), run_dir, max_steps=steps)
    return read_run(run_dir)


def read_run(run_dir) -> dict:
    records = [r for r in read_metrics(run_dir) if "loss" in r]
    return {"steps": [r["step"] for r in records], "losses": [r["loss"] for r in records],
            "taus": [r.get("tau") for r in records], "weights": load_file(run_dir / "model.safetensors")}


@pytest.fixture(scope="module")
def plain(data):
    """The reference run of every task: float32, contiguous, eager, no accumulation (computed on first use)."""
    runs = {}

    def get(task: str) -> dict:
        if task not in runs:
            runs[task] = train(data, task, "plain")
        return runs[task]

    return get


def assert_finite(run: dict, steps: int = STEPS) -> None:
    assert run["steps"] == list(range(1, steps + 1))
    assert all(torch.isfinite(torch.tensor(run["losses"])))


def assert_same_maths(run: dict, reference: dict, tol: dict = SAME_MATHS) -> None:
    assert_finite(run)
    assert run["losses"] == pytest.approx(reference["losses"], rel=tol["loss_rtol"])
    assert_close_tensors(run["weights"], reference["weights"], tol)


def assert_close_tensors(actual: dict, expected: dict, tol: dict) -> None:
    assert actual.keys() == expected.keys()
    floats = [key for key, value in expected.items() if value.is_floating_point()]
    assert floats  # the comparison is not vacuous
    for key in floats:
        torch.testing.assert_close(actual[key], expected[key], atol=tol["weight_atol"], rtol=tol["weight_rtol"],
                                   msg=lambda m: f"{key}: {m}")


# ------------------------------------------------------------------------------------------ one process


@pytest.mark.parametrize("task", TASKS)
def test_bf16_autocast_runs_finite_and_rounds_like_bf16(data, plain, task):
    run = train(data, task, "bf16", ["train.precision=bf16"])
    assert_finite(run)
    reference = plain(task)["losses"][0]
    # autocast is real (float32 would give exactly the plain loss) and only rounds
    assert run["losses"][0] != reference
    assert run["losses"][0] == pytest.approx(reference, rel=BF16_FIRST_LOSS_RTOL)


@pytest.mark.parametrize("task", TASKS)
def test_channels_last_gives_the_plain_result(data, plain, task):
    run = train(data, task, "channels_last", ["train.channels_last=true"])
    assert_same_maths(run, plain(task))


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_compile_gives_the_plain_result(data, plain, task):
    no_dropout = NO_DROPOUT.get(task, [])
    run = train(data, task, "compile", ["train.compile=true", *no_dropout])
    assert_same_maths(run, train(data, task, "plain_no_dropout", no_dropout) if no_dropout else plain(task))


@pytest.mark.parametrize("task", TASKS)
def test_grad_accum_runs_in_optimizer_steps(data, task):
    # half the batch per forward pass, two passes per optimizer step: the same 3 optimizer steps per epoch
    run = train(data, task, "accum", ["train.grad_accum=2", f"data.batch_size={BATCH[task] // 2}"])
    assert_finite(run)
    if task == "byol":  # the target's τ follows optimizer steps, not micro-batches: K = 2 epochs x 3 steps
        assert run["taus"] == pytest.approx([momentum_schedule(k, 2 * 3, 0.9) for k in range(STEPS)])


def test_grad_accum_equals_the_whole_batch_for_a_batch_independent_model(data):
    # ConvNeXt normalises per sample (LayerNorm), so 2 x 4 samples accumulated are 8 samples in one pass:
    # the mean of the micro-batch losses and the summed gradients are the whole batch's, up to rounding.
    model = ['model.backbone="test_convnext"', "aug.preset=none", "aug.label_smoothing=0.0"]
    whole = train(data, "classify", "convnext_whole", model)
    accumulated = train(data, "classify", "convnext_accum", [*model, "train.grad_accum=2", "data.batch_size=4"])
    assert_same_maths(accumulated, whole, {"loss_rtol": 1e-5, "weight_atol": 1e-6, "weight_rtol": 1e-5})


# ------------------------------------------------------------------------------------------ two processes


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["no", "bf16"])
@pytest.mark.parametrize("task", TASKS)
def test_sync_bn_on_two_processes_gives_the_one_process_result(data, task, precision):
    # FCN's head drops out with each process's own masks; for segmentation compare what comes before it: the
    # encoder's batch-norm statistics after one step (of the global batch with SyncBN, of half of it without)
    steps = 1 if task == "segment" else STEPS
    overrides = [*NO_AUG[task], *NO_DROPOUT.get(task, []), f"train.precision={precision}", "train.sync_bn=true"]
    one = train(data, task, f"one_{precision}", overrides, steps)
    out = data / "runs" / task / f"two_{precision}"
    sets = [arg for item in overrides for arg in ("--set", item)]
    dlcvkit("launch", "--procs", 2, "--", task, "-r", data / f"{task}.toml", *sets, "--max-steps", steps,
            "--out", out)
    two = read_run(out)
    assert_finite(two, steps)
    if task == "segment":
        def statistics(run):
            return {k: v for k, v in run["weights"].items() if k.endswith(("running_mean", "running_var"))}

        assert_close_tensors(statistics(two), statistics(one), SAME_MATHS if precision == "no" else BF16_STATISTICS)
    elif precision == "no":
        assert_same_maths(two, one)
    else:  # bf16 rounds each process's activations: the 2-process run stays within bf16's precision
        assert two["losses"] == pytest.approx(one["losses"], rel=BF16_FIRST_LOSS_RTOL)


# ------------------------------------------------------------------------------------------ host syncs

# Reading a tensor back (or building one from Python numbers) waits for the GPU: the loop may do it once per
# log interval, never per step. These calls are counted between two log points of a real run.
READ_BACKS = ["item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__"]
BUILDS = ["tensor", "as_tensor"]
TORCH = f"{os.sep}torch{os.sep}"


def _sync_site(stack: list) -> str | None:
    """Where a counted call comes from (the first frame outside torch), or None for calls that are no device
    sync on a GPU either: data loading (host work by design), torch's optimizers (their step counters are CPU
    tensors on any device) and kornia (the tasks leave its pipelines on the CPU, where kornia 0.9 draws and reads
    its random parameters and copies them to the device without waiting)."""
    loading = any(f"{TORCH}utils{os.sep}data{os.sep}" in f.filename for f in stack)
    if loading or f"{TORCH}optim{os.sep}" in stack[-1].filename:
        return None
    caller = next(f for f in reversed(stack) if TORCH not in f.filename)
    return None if f"{os.sep}kornia{os.sep}" in caller.filename else f"{caller.filename}:{caller.lineno}"


@pytest.fixture
def host_syncs(monkeypatch):
    """Counted calls between the end of the engine's first log record and the start of the next, by call site."""
    windows, state = [], {"open": False}

    def counted(original):
        def call(*args, **kwargs):
            if state["open"] and (site := _sync_site(traceback.extract_stack(sys._getframe(1)))):
                windows[-1].append(f"{original.__name__} at {site}")
            return original(*args, **kwargs)
        return call

    for name in READ_BACKS:
        monkeypatch.setattr(torch.Tensor, name, counted(getattr(torch.Tensor, name)))
    for name in BUILDS:
        monkeypatch.setattr(torch, name, counted(getattr(torch, name)))
    flush = RunLog.flush

    def logged(self, *args, **kwargs):
        state["open"] = False
        try:
            return flush(self, *args, **kwargs)
        finally:
            windows.append([])
            state["open"] = True

    monkeypatch.setattr(RunLog, "flush", logged)
    return windows


# every per-step path of the loop at once: bf16 autocast, micro-batches, clipping, the model EMA, mixup
BUSY = ["train.precision=bf16", "train.grad_accum=2", "train.clip_grad_norm=1.0", "train.model_ema=0.9",
        "train.log_every=2", "train.epochs=4"]


@pytest.mark.parametrize("task", TASKS)
def test_no_host_sync_between_two_log_points(data, host_syncs, task):
    extra = {"classify": ["aug.mixup=0.2"], "segment": ["aug.scale_min=0.5"]}.get(task, [])
    train(data, task, "syncs", [*BUSY, f"data.batch_size={BATCH[task] // 2}", *extra])
    # log points after steps 2 and 3 (the stop step); the window between them holds step 3 whole
    assert len(host_syncs) >= 2
    assert host_syncs[0] == []
