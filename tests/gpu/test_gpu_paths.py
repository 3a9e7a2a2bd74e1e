"""The GPU paths of the course's jobs, checked on a CUDA device by `benchmarks/gpu_check.sh` (`pytest -m gpu`):
a stopped and resumed run is bit-identical to an uninterrupted one (train.deterministic), `eval seg --run` on the
device prints the CPU's digits, no device sync between two log points, fp16 trains through Accelerate's grad
scaler, 1 and 2 GPUs give the same losses. Each check that can also runs at toy sizes on the CPU (the `cpu` cases,
in the default suite), so that the checks cannot rot where there is no GPU. Throughput is `dlcvkit bench`'s."""

import json
import math
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState

from dlcvkit.bench.train import TASKS, synthetic_data
from dlcvkit.config import apply_override, write_recipe
from dlcvkit.runs.scoring import iou_report
from dlcvkit.engine.checkpoint import latest_checkpoint
from dlcvkit.engine.loop import fit
from dlcvkit.engine.runlog import RunLog, read_metrics
from dlcvkit.engine.weights import read_state_dict
from dlcvkit.runs.load import run_recipe
from dlcvkit.runs.segment import evaluate_run
from dlcvkit.tasks.registry import build_task, task_classes

BF16_RTOL = 3e-2  # bf16 keeps 8 significant bits (as tests/engine/test_switches.py)
_CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                         reason="needs a CUDA device")])
DEVICES = [pytest.param("cpu", id="cpu"), _CUDA]
# every per-step path of the loop at once, as tests/engine/test_switches.py's host-sync test; with the synthetic data
# (64 images, 16 segmentation pairs) an epoch is 4 optimizer steps, so log points 2 and 4 fall inside one
BUSY = ["train.grad_accum=2", "train.clip_grad_norm=1.0", "train.model_ema=0.9", "train.log_every=2", "train.epochs=2"]
# (task, image side, steps of the uninterrupted run, step the other one stops at, recipe overrides) per device
RESUME = {
    "cuda": {"cls": (128, 7, 5, ["model.backbone=resnet50", "data.img_size=128", "data.batch_size=8",
                                 "train.grad_accum=2", "train.precision=bf16", "train.channels_last=true",
                                 "train.model_ema=0.9"]),
             "seg": (512, 6, 3, ["model.name=fcn8s", "model.backbone=vgg16", "data.img_size=512",
                                 "data.batch_size=4"])},
    "cpu": {"cls": (32, 5, 3, ["model.backbone=test_resnet", "data.img_size=32", "data.batch_size=8",
                               "train.grad_accum=2", "train.precision=bf16", "train.model_ema=0.9"]),
            "seg": (32, 3, 2, ["model.name=fcn8s", "model.backbone=test_resnet", "model.fcn_width=16",
                               "data.img_size=32", "data.batch_size=4"])},
}
EVAL_SEG = {"cuda": (512, 6, ["model.name=fcn8s", "model.backbone=resnet18", "data.img_size=512", "data.batch_size=8"]),
            "cpu": (32, 2, RESUME["cpu"]["seg"][3])}
SYNCS = {"cuda": (64, "bf16", {
    "byol": ["model.backbone=resnet18", "model.projection_hidden=512", "model.projection_dim=128",
             "model.prediction_hidden=512", "data.batch_size=8"],
    "cls": ["model.backbone=resnet18", "aug.mixup=0.2", "data.batch_size=8"],
    "seg": ["model.name=fcn8s", "model.backbone=resnet18", "model.fcn_width=512", "aug.scale_min=0.5",
            "data.batch_size=2"]}),
    # on the CPU nothing is counted (no CUDA): one task shows that the window between two log points is found
    "cpu": (32, "no", {"cls": ["model.backbone=test_resnet", "aug.mixup=0.2", "data.batch_size=8"]})}
FP16 = (64, 4, ["model.backbone=resnet18", "data.batch_size=16"])
TWO_GPUS = (64, 4, ["model.backbone=resnet18", "model.projection_hidden=512", "model.projection_dim=128",
                    "model.prediction_hidden=512", "data.img_size=64", "data.batch_size=32", "aug.preset=none",
                    "train.precision=bf16", "train.sync_bn=true"])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("gpu_paths_data")


@pytest.fixture(autouse=True)
def _peak_memory(record_property):
    """Every check records the GPU memory it allocated at most (in the JUnit XML gpu_check.sh writes)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    yield
    if torch.cuda.is_available():
        record_property("peak_mem_mb", round(torch.cuda.max_memory_allocated() / 2**20))


def _recipe(task: str, data: Path, overrides: list[str], device: str):
    """The task's default recipe on synthetic `data` with `overrides`, in this process on `device`."""
    recipe = task_classes(TASKS[task])[0]()
    items = [f"data.train={json.dumps(str(data))}", "data.num_workers=0", "train.tensorboard=false",
             f"train.cpu={str(device == 'cpu').lower()}", *overrides]
    for item in items:
        apply_override(recipe, item)
    return recipe


def _fit(task: str, data: Path, overrides: list[str], device: str, run_dir: Path, steps: int,
         resume: bool = False) -> None:
    AcceleratorState._reset_state(reset_partial_state=True)  # each run builds its own Accelerator
    fit(build_task(_recipe(task, data, overrides, device)), run_dir, max_steps=steps, resume=resume)


def _max_difference(a: Path, b: Path) -> float:
    first, second = read_state_dict(a), read_state_dict(b)
    assert first.keys() == second.keys()
    return max((first[k].double() - second[k].double()).abs().max().item() for k in first if first[k].numel())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("task", ["cls", "seg"])
def test_a_resumed_run_is_bit_identical(task, device, cache, tmp_path, record_property):
    img_size, steps, stop_at, overrides = RESUME[device][task]
    data = synthetic_data(task, img_size, cache)
    overrides = [*overrides, "train.deterministic=true", "train.epochs=3", "train.log_every=1"]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _fit(task, data, overrides, device, tmp_path / "whole", steps)
            _fit(task, data, overrides, device, tmp_path / "split", stop_at)
            _fit(task, data, overrides, device, tmp_path / "split", steps, resume=True)
    finally:
        torch.use_deterministic_algorithms(False)  # for the tests after this one in the same process
    # torch names the kernels without a deterministic CUDA implementation when it is asked for one
    kernels = sorted({str(w.message).split(" does not have")[0] for w in caught
                      if "does not have a deterministic implementation" in str(w.message)})
    record_property("nondeterministic_kernels", kernels)
    names = ["model.safetensors"] + ["ema.safetensors"] * (tmp_path / "whole" / "ema.safetensors").exists()
    assert len(names) == (2 if task == "cls" else 1)
    differences = {n: _max_difference(tmp_path / "whole" / n, tmp_path / "split" / n) for n in names}
    assert differences == dict.fromkeys(names, 0.0), f"kernels without a deterministic version: {kernels}"


@pytest.mark.parametrize("device", DEVICES)
def test_eval_on_the_device_prints_the_cpus_digits(device, cache, tmp_path, record_property):
    img_size, steps, overrides = EVAL_SEG[device]
    data = synthetic_data("seg", img_size, cache)
    _fit("seg", data, [*overrides, "train.epochs=3"], device, tmp_path / "run", steps)
    recipe = run_recipe(tmp_path / "run")
    recipe.train.cpu = True
    (tmp_path / "run_cpu").mkdir()
    write_recipe(recipe, tmp_path / "run_cpu" / "recipe.toml")
    (tmp_path / "run_cpu" / "model.safetensors").write_bytes((tmp_path / "run" / "model.safetensors").read_bytes())
    matrices = {}
    for name in ("run", "run_cpu"):
        AcceleratorState._reset_state(reset_partial_state=True)
        matrices[name], _, _ = evaluate_run(tmp_path / name, data, weights="last", num_workers=0)
    record_property("pixels_predicted_differently", int((matrices["run"] - matrices["run_cpu"]).abs().sum()) // 2)
    record_property("cudnn_allow_tf32", torch.backends.cudnn.allow_tf32)
    printed = {name: iou_report(matrix)[0] for name, matrix in matrices.items()}
    assert "mean_iou: " in printed["run_cpu"]
    assert printed["run"] == printed["run_cpu"]


def _syncs_between_log_points(run, device: str, monkeypatch) -> Counter:
    """Call sites of the device syncs torch reports between the end of the first log record of `run` and the
    start of the next (none are counted on the CPU)."""
    windows: list[int] = []
    flush = RunLog.flush

    def logged(self, *args, **kwargs):
        if device == "cuda":
            torch.cuda.set_sync_debug_mode(0)
        windows.append(len(caught))
        try:
            return flush(self, *args, **kwargs)
        finally:
            windows.append(len(caught))
            if device == "cuda":
                torch.cuda.set_sync_debug_mode("warn")

    monkeypatch.setattr(RunLog, "flush", logged)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            run()
        finally:
            if device == "cuda":
                torch.cuda.set_sync_debug_mode(0)
    assert len(windows) >= 3, "the run logged fewer than two records: no window between two log points"
    between = caught[windows[1]:windows[2]]  # from the exit of the first flush to the entry of the second
    return Counter(f"{Path(w.filename).name}:{w.lineno}" for w in between if "synchronizing" in str(w.message))


@pytest.mark.parametrize("device", DEVICES)
def test_no_device_sync_between_two_log_points(device, cache, tmp_path, monkeypatch):
    img_size, precision, tasks = SYNCS[device]
    sites = {}
    for task, overrides in tasks.items():
        data = synthetic_data(task, img_size, cache)
        busy = [*overrides, *BUSY, f"train.precision={precision}"]
        run_dir = tmp_path / task
        found = _syncs_between_log_points(lambda: _fit(task, data, busy, device, run_dir, 4), device, monkeypatch)
        sites[task] = dict(found.most_common(8))
    assert sites == {task: {} for task in tasks}


@pytest.mark.parametrize("device", [_CUDA])
def test_fp16_trains_through_the_grad_scaler(device, cache, tmp_path, record_property):
    img_size, steps, overrides = FP16
    data = synthetic_data("cls", img_size, cache)
    _fit("cls", data, [*overrides, "train.precision=fp16", "train.log_every=1"], device, tmp_path / "run", steps)
    losses = [r["loss"] for r in read_metrics(tmp_path / "run") if "loss" in r]
    scaler = latest_checkpoint(tmp_path / "run") / "scaler.pt"
    assert len(losses) == steps and all(map(math.isfinite, losses)), losses
    assert scaler.is_file()
    record_property("loss_scale", torch.load(scaler, weights_only=True).get("scale"))


@pytest.mark.parametrize("device", [_CUDA])
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices (NCCL, SyncBatchNorm)")
def test_one_and_two_gpus_give_the_same_losses(device, cache, tmp_path):
    # from the command line, as a student launches it: bf16 and SyncBatchNorm
    img_size, steps, overrides = TWO_GPUS
    data = synthetic_data("byol", img_size, cache)
    write_recipe(_recipe("byol", data, [*overrides, "train.log_every=1"], device), tmp_path / "recipe.toml")
    command = ["byol", "-r", str(tmp_path / "recipe.toml"), "--max-steps", str(steps)]
    for name, launch in (("one", []), ("two", ["launch", "--gpus", "2", "--"])):
        done = subprocess.run([sys.executable, "-m", "dlcvkit", *launch, *command, "--out", str(tmp_path / name)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = ([r["loss"] for r in read_metrics(tmp_path / name) if "loss" in r] for name in ("one", "two"))
    assert len(one) == len(two) == steps
    assert two == pytest.approx(one, rel=BF16_RTOL)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_every_recipe_override_of_the_checks_is_a_valid_key(device):
    # the CUDA cases only run on a GPU: a typo in their recipes must fail here
    lists = [(task, case[3]) for task, case in RESUME[device].items()] + [("seg", EVAL_SEG[device][2])]
    lists += [(task, [*items, *BUSY]) for task, items in SYNCS[device][2].items()]
    lists += [("cls", FP16[2]), ("byol", TWO_GPUS[2])]
    for task, overrides in lists:
        _recipe(task, Path("data"), overrides, device)
