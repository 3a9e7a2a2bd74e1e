"""`dlcvkit bench gpu`: every GPU path of the course's jobs tried once, in under 8 minutes on one CUDA GPU, so that
a student's first GPU run is not where they are tried first. Each part runs in its own process with its own time
limit (a crash or a hang costs that part only) and is recorded as ok, failed or skipped with the reason; the
whole check is written as JSON and Markdown. `--size tiny --device cpu` is the dry run of the same code.

Parts, in the order they run (the time budget skips the last ones when the first take longer than planned):
- byol_step: BYOL ResNet-50, 128 px, batch 256, bf16; the engine's step vs a bare loop (goal: >= 90% of it)
- augment: BYOL's two views, kornia on the GPU vs torchvision v2 per sample in CPU workers (img/s)
- seg_fcn8s, seg_deeplabv3: FCN8s-VGG16 and DeepLabv3-ResNet50 training at 512 px
- predict_fcn8s, predict_deeplabv3: `predict seg` on 257 images (the course allows 10 minutes)
- byol_channels_last: A/B of the switch against byol_step's engine figure
- resume_cls, resume_seg: stopped and resumed runs bit-identical to uninterrupted ones (train.deterministic)
- eval_gpu_cpu: `eval seg --run` on the GPU prints the CPU's digits
- host_syncs: device syncs between two log points of each task (torch.cuda.set_sync_debug_mode)
- fp16_scaler: precision fp16 trains through Accelerate's grad scaler
- byol_compile: A/B of torch.compile against byol_step (last: its compilation takes the longest)
- two_gpus: 1 vs 2 processes (NCCL, SyncBatchNorm, bf16); needs 2 GPUs
Every part records the peak GPU memory it allocated (torch.cuda.max_memory_allocated).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
from accelerate.state import AcceleratorState

from dlcvkit.bench.augment import bench_augment
from dlcvkit.bench.infer import bench_infer
from dlcvkit.bench.report import machine_line
from dlcvkit.bench.suite import REFERENCES
from dlcvkit.bench.timing import add_speedups
from dlcvkit.bench.train import TASKS, bench_train, synthetic_data
from dlcvkit.config import apply_override, write_recipe
from dlcvkit.runs.scoring import iou_report
from dlcvkit.engine.checkpoint import latest_checkpoint
from dlcvkit.engine.loop import fit
from dlcvkit.engine.runlog import RunLog, read_metrics
from dlcvkit.engine.weights import read_state_dict
from dlcvkit.errors import DlcvkitError
from dlcvkit.runnames import EMA_FILE, MODEL_FILE, RECIPE_FILE
from dlcvkit.runs.load import run_recipe
from dlcvkit.runs.segment import evaluate_run
from dlcvkit.tasks.registry import build_task, task_classes

COURSE_IMAGES, COURSE_SECONDS = 257, 600  # P2's validation set and the course's inference limit
PREDICT_GOAL_SECONDS = 60  # "well under" the course's 10 minutes
ENGINE_GOAL = 0.90  # engine throughput / bare loop throughput
BF16_RTOL = 3e-2  # bf16 keeps 8 significant bits (as tests/engine/test_switches.py)
TINY_TIMEOUT = 900  # seconds per part of the dry run (torch.compile on a shared 2-core CPU takes minutes)

_BYOL = {"task": "byol", "model": "resnet50", "img_size": 128, "batch": 256, "precision": "bf16", "interval": 5,
         "repeats": 3, "warmup": 1, "workers": 8}
_BYOL_TINY = {"task": "byol", "model": "test_resnet", "img_size": 32, "batch": 8, "precision": "bf16",
              "interval": 1, "repeats": 1, "warmup": 0, "workers": 1}
_SEG = {"task": "seg", "img_size": 512, "batch": 8, "precision": "bf16", "interval": 5, "repeats": 3, "warmup": 1,
        "workers": 8}
# float32: the CPU's bf16 transposed convolutions (FCN's upsampling) are 10x slower than its float32 ones
_SEG_TINY = {"task": "seg", "model": "test_resnet", "img_size": 32, "batch": 4, "precision": "fp32", "interval": 1,
             "repeats": 1, "warmup": 0, "workers": 0}
_PREDICT = {"images": COURSE_IMAGES, "img_size": 512, "batch": 16, "workers": 8, "precision": "bf16", "repeats": 1,
            "warmup": 1}
_PREDICT_TINY = {"backbone": "test_resnet", "images": 2, "img_size": 32, "batch": 2, "workers": 0,
                 "precision": "bf16", "repeats": 1, "warmup": 0}
# the exactness parts: (task, steps of the uninterrupted run, step the other one stops at, recipe overrides)
_RESUME_CLS = ["model.backbone=resnet50", "data.img_size=128", "data.batch_size=8", "train.grad_accum=2",
               "train.precision=bf16", "train.channels_last=true", "train.model_ema=0.9"]
_RESUME_SEG = ["model.name=fcn8s", "model.backbone=vgg16", "data.img_size=512", "data.batch_size=4"]
_TINY_CLS = ["model.backbone=test_resnet", "data.img_size=32", "data.batch_size=8", "train.grad_accum=2",
             "train.precision=bf16", "train.model_ema=0.9"]
_TINY_SEG = ["model.name=fcn8s", "model.backbone=test_resnet", "model.fcn_width=16", "data.img_size=32",
             "data.batch_size=4"]
_EVAL_SEG = ["model.name=fcn8s", "model.backbone=resnet18", "data.img_size=512", "data.batch_size=8"]
# every per-step path of the loop at once, as tests/engine/test_switches.py's host-sync test; with the synthetic data
# (64 images, 16 segmentation pairs) an epoch is 4 optimizer steps, so log points 2 and 4 fall inside one
_BUSY = ["train.grad_accum=2", "train.clip_grad_norm=1.0", "train.model_ema=0.9", "train.log_every=2",
         "train.epochs=2"]
_SYNC_TASKS = {"byol": ["model.backbone=resnet18", "model.projection_hidden=512", "model.projection_dim=128",
                        "model.prediction_hidden=512", "data.batch_size=8"],
               "cls": ["model.backbone=resnet18", "aug.mixup=0.2", "data.batch_size=8"],
               "seg": ["model.name=fcn8s", "model.backbone=resnet18", "model.fcn_width=512", "aug.scale_min=0.5",
                       "data.batch_size=2"]}
# the dry run counts nothing (no CUDA): one task shows that the window between two log points is found
_SYNC_TINY = {"cls": ["model.backbone=test_resnet", "aug.mixup=0.2", "data.batch_size=8"]}
_TWO_GPUS = ["model.backbone=resnet18", "model.projection_hidden=512", "model.projection_dim=128",
             "model.prediction_hidden=512", "data.img_size=64", "data.batch_size=32", "aug.preset=none",
             "train.precision=bf16", "train.sync_bn=true"]

SIZES = {
    "full": {
        "byol_step": _BYOL,
        "augment": {"sizes": [128], "batches": [256], "workers": 8, "batches_per_repeat": 8, "repeats": 3,
                    "warmup": 1},
        "seg_fcn8s": _SEG | {"model": "vgg16", "segmenter": "fcn8s"},
        "seg_deeplabv3": _SEG | {"model": "resnet50", "segmenter": "deeplabv3"},
        "predict_fcn8s": _PREDICT | {"segmenter": "fcn8s", "backbone": "vgg16"},
        "predict_deeplabv3": _PREDICT | {"segmenter": "deeplabv3", "backbone": "resnet50"},
        "byol_channels_last": _BYOL | {"channels_last": True},
        "byol_compile": _BYOL | {"compile": True},
        "resume_cls": {"task": "cls", "img_size": 128, "steps": 7, "stop_at": 5, "overrides": _RESUME_CLS},
        "resume_seg": {"task": "seg", "img_size": 512, "steps": 6, "stop_at": 3, "overrides": _RESUME_SEG},
        "eval_gpu_cpu": {"img_size": 512, "steps": 6, "overrides": _EVAL_SEG},
        "host_syncs": {"img_size": 64, "precision": "bf16", "tasks": _SYNC_TASKS},
        "fp16_scaler": {"img_size": 64, "steps": 4, "overrides": ["model.backbone=resnet18", "data.batch_size=16"]},
        "two_gpus": {"img_size": 64, "steps": 4, "overrides": _TWO_GPUS},
    },
    "tiny": {
        "byol_step": _BYOL_TINY,
        "augment": {"sizes": [32], "batches": [4], "workers": 1, "batches_per_repeat": 1, "repeats": 1,
                    "warmup": 0},
        "seg_fcn8s": _SEG_TINY | {"segmenter": "fcn8s"},
        "seg_deeplabv3": _SEG_TINY | {"segmenter": "deeplabv3"},
        "predict_fcn8s": _PREDICT_TINY | {"segmenter": "fcn8s"},
        "predict_deeplabv3": _PREDICT_TINY | {"segmenter": "deeplabv3"},
        "byol_channels_last": _BYOL_TINY | {"channels_last": True},
        "byol_compile": _BYOL_TINY | {"compile": True},
        "resume_cls": {"task": "cls", "img_size": 32, "steps": 5, "stop_at": 3, "overrides": _TINY_CLS},
        "resume_seg": {"task": "seg", "img_size": 32, "steps": 3, "stop_at": 2, "overrides": _TINY_SEG},
        "eval_gpu_cpu": {"img_size": 32, "steps": 2, "overrides": _TINY_SEG},
        "host_syncs": {"img_size": 32, "precision": "no", "tasks": _SYNC_TINY},
        "fp16_scaler": {"img_size": 32, "steps": 2, "overrides": ["model.backbone=test_resnet", "data.batch_size=8"]},
        "two_gpus": {"img_size": 32, "steps": 2, "overrides": _TWO_GPUS},
    },
}


class PartSkipped(Exception):
    """A part that cannot run here (no second GPU, fp16 on the CPU); the message says why."""


# ------------------------------------------------------------------------------------------------ the parts


def _train(cfg: dict, device: torch.device, cache: Path) -> dict:
    """bench_train's contenders: the bare loop, the engine, the engine with loader workers."""
    return {"records": add_speedups(bench_train(**cfg, cache=cache, device=device), REFERENCES)}


def _train_ab(cfg: dict, device: torch.device, cache: Path) -> dict:
    """The engine alone with one switch on; compared with byol_step's engine figure in the report."""
    return {"records": bench_train(**cfg, cache=cache, device=device, contenders=("dlcvkit",))}


def _augment(cfg: dict, device: torch.device, cache: Path) -> dict:
    contenders = ("kornia", "kornia_device_rng", "torchvision")
    return {"records": add_speedups(bench_augment(**cfg, device=device, contenders=contenders), REFERENCES)}


def _predict(cfg: dict, device: torch.device, cache: Path) -> dict:
    records = bench_infer(**cfg, cache=cache, device=device)
    end_to_end = next(r for r in records if r["contender"] == "dlcvkit")
    return {"records": records, "checks": {"course_images": COURSE_IMAGES,
                                           "course_seconds": COURSE_IMAGES / end_to_end["samples_per_s"]}}


def _resume(cfg: dict, device: torch.device, cache: Path) -> dict:
    """An uninterrupted run vs one stopped at `stop_at` and resumed, with train.deterministic = true."""
    data, root = synthetic_data(cfg["task"], cfg["img_size"], cache), _scratch(cache, "resume")
    overrides = [*cfg["overrides"], "train.deterministic=true", "train.epochs=3", "train.log_every=1"]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _fit(cfg["task"], data, overrides, device, root / "whole", cfg["steps"])
            _fit(cfg["task"], data, overrides, device, root / "split", cfg["stop_at"])
            _fit(cfg["task"], data, overrides, device, root / "split", cfg["steps"], resume=True)
    finally:
        torch.use_deterministic_algorithms(False)  # for the parts after this one in the same process
    names = [MODEL_FILE] + [EMA_FILE] * (root / "whole" / EMA_FILE).exists()
    differences = [_max_difference(root / "whole" / n, root / "split" / n) for n in names]
    # torch names the kernels without a deterministic CUDA implementation when it is asked for one
    nondeterministic = sorted({str(w.message).split(" does not have")[0] for w in caught
                               if "does not have a deterministic implementation" in str(w.message)})
    checks = {"bit_identical": max(differences) == 0.0, "max_abs_difference": max(differences), "files": names,
              "steps": cfg["steps"], "resumed_at": cfg["stop_at"], "nondeterministic_kernels": nondeterministic}
    shutil.rmtree(root, ignore_errors=True)
    return {"checks": checks}


def _eval_gpu_cpu(cfg: dict, device: torch.device, cache: Path) -> dict:
    """`eval seg --run` of one trained run on `device` and on the CPU: the course's printout must be the same."""
    data, root = synthetic_data("seg", cfg["img_size"], cache), _scratch(cache, "eval")
    _fit("seg", data, [*cfg["overrides"], "train.epochs=3"], device, root / "run", cfg["steps"])
    recipe = run_recipe(root / "run")
    recipe.train.cpu = True
    (root / "run_cpu").mkdir()
    write_recipe(recipe, root / "run_cpu" / RECIPE_FILE)
    shutil.copy(root / "run" / MODEL_FILE, root / "run_cpu" / MODEL_FILE)
    matrices = {}
    for name in ("run", "run_cpu"):
        AcceleratorState._reset_state(reset_partial_state=True)
        matrices[name], _ = evaluate_run(root / name, data, weights="last", num_workers=0)
    printed = {name: iou_report(matrix)[0] for name, matrix in matrices.items()}
    checks = {"same_printout": printed["run"] == printed["run_cpu"],
              "pixels_predicted_differently": int((matrices["run"] - matrices["run_cpu"]).abs().sum()) // 2,
              "printout_device": printed["run"], "printout_cpu": printed["run_cpu"],
              "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
    shutil.rmtree(root, ignore_errors=True)
    return {"checks": checks}


def _host_syncs(cfg: dict, device: torch.device, cache: Path) -> dict:
    """Device syncs of each task's steps between its first two log points (2 steps), as torch reports them."""
    checks = {}
    for task, overrides in cfg["tasks"].items():
        data, root = synthetic_data(task, cfg["img_size"], cache), _scratch(cache, "syncs")
        busy = [*overrides, *_BUSY, f"train.precision={cfg['precision']}"]
        sites = _syncs_between_log_points(lambda: _fit(task, data, busy, device, root / "run", 4), device)
        checks[task] = {"syncs_per_step": sum(sites.values()) / 2, "sites": dict(sites.most_common(8))}
        shutil.rmtree(root, ignore_errors=True)
    if device.type != "cuda":
        raise PartSkipped("counting device syncs needs CUDA (torch.cuda.set_sync_debug_mode); the steps ran; on "
                          "the CPU tests/engine/test_switches.py counts host reads")
    return {"checks": checks}


def _fp16(cfg: dict, device: torch.device, cache: Path) -> dict:
    """A few fp16 steps: finite losses and Accelerate's grad scaler in the checkpoint (scaler.pt)."""
    if device.type != "cuda":
        raise PartSkipped("precision fp16 needs a GPU (the engine refuses it on the CPU)")
    data, root = synthetic_data("cls", cfg["img_size"], cache), _scratch(cache, "fp16")
    _fit("cls", data, [*cfg["overrides"], "train.precision=fp16", "train.log_every=1"], device, root / "run",
         cfg["steps"])
    losses = [r["loss"] for r in read_metrics(root / "run") if "loss" in r]
    scaler = latest_checkpoint(root / "run") / "scaler.pt"
    checks = {"losses": losses, "finite": all(map(math.isfinite, losses)), "scaler_saved": scaler.is_file(),
              "scale": torch.load(scaler, weights_only=True).get("scale") if scaler.is_file() else None}
    shutil.rmtree(root, ignore_errors=True)
    return {"checks": checks}


def _two_gpus(cfg: dict, device: torch.device, cache: Path) -> dict:
    """BYOL with bf16 and SyncBatchNorm on 1 and on 2 GPUs (NCCL), from the command line: the same losses."""
    if device.type != "cuda" or torch.cuda.device_count() < 2:
        raise PartSkipped(f"needs 2 GPUs (NCCL, SyncBatchNorm); this machine has {torch.cuda.device_count()}")
    data, root = synthetic_data("byol", cfg["img_size"], cache), _scratch(cache, "two_gpus")
    recipe_cls, _ = task_classes("byol")
    recipe = recipe_cls()
    for item in [f"data.train={json.dumps(str(data))}", *cfg["overrides"], "train.log_every=1"]:
        apply_override(recipe, item)
    write_recipe(recipe, root / RECIPE_FILE)
    command = ["byol", "-r", str(root / RECIPE_FILE), "--max-steps", str(cfg["steps"])]
    for name, launch in (("one", []), ("two", ["launch", "--gpus", "2", "--"])):
        done = subprocess.run([sys.executable, "-m", "dlcvkit", *launch, *command, "--out", str(root / name)],
                              capture_output=True, text=True)
        if done.returncode:
            lines = [line for line in done.stderr.splitlines() if line.strip()] or ["no message"]
            raise DlcvkitError(f"the {name}-GPU run exited {done.returncode}: {lines[-1]}")
    one, two = ([r["loss"] for r in read_metrics(root / name) if "loss" in r] for name in ("one", "two"))
    close = len(one) == len(two) == cfg["steps"] and all(abs(a - b) <= BF16_RTOL * abs(a) for a, b in zip(one, two))
    shutil.rmtree(root, ignore_errors=True)
    return {"checks": {"losses_one_gpu": one, "losses_two_gpus": two, "within_bf16": close, "rtol": BF16_RTOL}}


def _fit(task: str, data: Path, overrides: list[str], device: torch.device, run_dir: Path, steps: int,
         resume: bool = False) -> None:
    """`fit` in this process on synthetic `data` with the task's default recipe and `overrides`."""
    recipe = task_classes(TASKS[task])[0]()
    items = [f"data.train={json.dumps(str(data))}", "data.num_workers=0", "train.tensorboard=false",
             f"train.cpu={str(device.type == 'cpu').lower()}", *overrides]
    for item in items:
        apply_override(recipe, item)
    AcceleratorState._reset_state(reset_partial_state=True)  # each run builds its own Accelerator
    fit(build_task(recipe), run_dir, max_steps=steps, resume=resume)


def _syncs_between_log_points(run: Callable[[], None], device: torch.device) -> Counter:
    """Call sites of the device syncs torch reports between the end of the first log record of `run` and the
    start of the next (none are counted on the CPU)."""
    windows: list[int] = []
    flush = RunLog.flush

    def logged(self, *args, **kwargs):
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode(0)
        windows.append(len(caught))
        try:
            return flush(self, *args, **kwargs)
        finally:
            windows.append(len(caught))
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")

    with warnings.catch_warnings(record=True) as caught, mock.patch.object(RunLog, "flush", logged):
        warnings.simplefilter("always")
        try:
            run()
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode(0)
    if len(windows) < 3:
        raise DlcvkitError("the run logged fewer than two records: no window between two log points")
    between = caught[windows[1]:windows[2]]  # from the exit of the first flush to the entry of the second
    return Counter(f"{Path(w.filename).name}:{w.lineno}" for w in between
                   if "synchronizing" in str(w.message))


def _max_difference(a: Path, b: Path) -> float:
    first, second = read_state_dict(a), read_state_dict(b)
    if first.keys() != second.keys():
        raise DlcvkitError(f"{a} and {b} hold different tensors")
    return max((first[k].double() - second[k].double()).abs().max().item() for k in first if first[k].numel())


def _scratch(cache: Path, name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{name}_", dir=cache))


# ------------------------------------------------------------------------------------------ parts and goals
# A summary turns an ok part (and the others, for the A/B) into (its figure in words, whether its goal is met:
# None for a part without a goal).


def _train_summary(part: dict, parts: dict) -> tuple[str, bool | None]:
    by = {r["contender"]: r for r in part["records"]}
    engine, loaded = by["dlcvkit"], by["dlcvkit_loader"]
    text = (f"engine {engine['samples_per_s']:.1f} img/s = {engine['speedup']:.0%} of the bare loop; with loader "
            f"workers {loaded['samples_per_s']:.1f} img/s, {loaded['data_wait']:.0%} waiting for data")
    return text, engine["speedup"] >= ENGINE_GOAL if part["goal"] else None


def _ab_summary(part: dict, parts: dict) -> tuple[str, bool | None]:
    engine = part["records"][0]["samples_per_s"]
    plain = next((r["samples_per_s"] for r in parts.get("byol_step", {}).get("records", [])
                  if r["contender"] == "dlcvkit"), None)
    return f"engine {engine:.1f} img/s" + (f" = {engine / plain:.2f}x byol_step's" if plain else ""), None


def _augment_summary(part: dict, parts: dict) -> tuple[str, bool | None]:
    return "; ".join(f"{r['contender']} " + (f"{r['samples_per_s']:.0f} img/s" if r["samples_per_s"] else "failed")
                     for r in part["records"]), None


def _predict_summary(part: dict, parts: dict) -> tuple[str, bool | None]:
    seconds = part["checks"]["course_seconds"]
    return f"{seconds:.1f} s for {COURSE_IMAGES} images end to end", seconds < PREDICT_GOAL_SECONDS


def _resume_summary(part: dict, parts: dict) -> tuple[str, bool | None]:
    c = part["checks"]
    kernels = ", ".join(c["nondeterministic_kernels"]) or "none"
    return (f"{'bit-identical' if c['bit_identical'] else 'differs'} (max |diff| {c['max_abs_difference']:.3g}); "
            f"kernels torch has no deterministic version of: {kernels}"), c["bit_identical"]


def _eval_summary(part: dict, parts: dict) -> tuple[str, bool | None]:
    c = part["checks"]
    return (f"{'same' if c['same_printout'] else 'different'} printout, {c['pixels_predicted_differently']} pixels "
            f"predicted differently"), c["same_printout"]


def _syncs_summary(part: dict, parts: dict) -> tuple[str, bool | None]:
    c = part["checks"]
    return "; ".join(f"{task} {v['syncs_per_step']:g}/step" for task, v in c.items()), \
        all(v["syncs_per_step"] == 0 for v in c.values())


def _fp16_summary(part: dict, parts: dict) -> tuple[str, bool | None]:
    c = part["checks"]
    return f"loss scale {c['scale']}, losses {', '.join(f'{x:.4f}' for x in c['losses'])}", \
        c["finite"] and c["scaler_saved"]


def _two_gpus_summary(part: dict, parts: dict) -> tuple[str, bool | None]:
    c = part["checks"]
    return f"losses on 1 GPU {c['losses_one_gpu']}, on 2 GPUs {c['losses_two_gpus']}", c["within_bf16"]


@dataclass(frozen=True)
class Part:
    title: str
    run: Callable[[dict, torch.device, Path], dict]
    summarize: Callable[[dict, dict], tuple[str, bool | None]]
    timeout: int  # seconds at full size on one GPU, start-up included
    goal: str = ""  # what the figure must reach ("" = a figure only)


PREDICT_GOAL = f"257 images in < {PREDICT_GOAL_SECONDS} s (course: {COURSE_SECONDS} s)"
PARTS = {
    "byol_step": Part("BYOL ResNet-50 128 px b256 bf16: engine step vs bare loop", _train, _train_summary, 120,
                      f">= {ENGINE_GOAL:.0%} of the bare loop"),
    "augment": Part("BYOL two views: kornia on the device vs torchvision v2 in CPU workers", _augment,
                    _augment_summary, 60),
    "seg_fcn8s": Part("FCN8s-VGG16 training at 512 px", _train, _train_summary, 90),
    "seg_deeplabv3": Part("DeepLabv3-ResNet50 training at 512 px", _train, _train_summary, 90),
    "predict_fcn8s": Part("`predict seg` FCN8s-VGG16, 257 images at 512 px", _predict, _predict_summary, 120,
                          PREDICT_GOAL),
    "predict_deeplabv3": Part("`predict seg` DeepLabv3-ResNet50, 257 images at 512 px", _predict, _predict_summary,
                              90, PREDICT_GOAL),
    "byol_channels_last": Part("A/B: byol_step with train.channels_last", _train_ab, _ab_summary, 60),
    "resume_cls": Part("resume, classification (deterministic, bf16, channels-last, EMA)", _resume,
                       _resume_summary, 60, "bit-identical"),
    "resume_seg": Part("resume, segmentation FCN8s (deterministic)", _resume, _resume_summary, 60, "bit-identical"),
    "eval_gpu_cpu": Part("`eval seg --run`: the device prints the CPU's digits", _eval_gpu_cpu, _eval_summary, 60,
                         "same printout"),
    "host_syncs": Part("device syncs per step between two log points", _host_syncs, _syncs_summary, 60,
                       "0 per step"),
    "fp16_scaler": Part("precision fp16 through Accelerate's grad scaler", _fp16, _fp16_summary, 45,
                        "scaler used, finite losses"),
    "byol_compile": Part("A/B: byol_step with train.compile (inductor)", _train_ab, _ab_summary, 180),
    "two_gpus": Part("1 vs 2 GPUs: BYOL bf16 + SyncBatchNorm (NCCL)", _two_gpus, _two_gpus_summary, 120,
                     "same losses (bf16)"),
}


def summary(part: dict, parts: dict[str, dict]) -> tuple[str, bool | None]:
    """(the part's result in words, whether its goal is met; None without a goal or a result)."""
    if part["status"] != "ok":
        return part["reason"], None
    return PARTS[part["name"]].summarize(part, parts)


# ------------------------------------------------------------------------------------------------ running


def run_part(name: str, size: str, device: torch.device, cache: Path) -> dict:
    """One part in this process: its records and checks, seconds and peak GPU memory, or why it did not run."""
    part = PARTS[name]
    result = {"name": name, "title": part.title, "goal": part.goal, "status": "ok", "reason": ""}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        result |= part.run(SIZES[size][name], device, cache)
    except PartSkipped as e:
        result |= {"status": "skipped", "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - any failure of a part is its result; the other parts go on
        result |= {"status": "failed", "reason": _first_line(e)}
    result["seconds"] = time.perf_counter() - start
    result["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return result


def gpu_check(only: list[str], skip: list[str], size: str, device: torch.device, cache: Path, info: dict, *,
              budget: float, timeout: int, isolate: bool, threads: int,
              progress: Callable[[dict], None] = lambda part: None) -> dict:
    """The whole check: the machine, and every part in order (those not selected recorded as skipped)."""
    if size == "full" and device.type != "cuda":
        raise DlcvkitError("bench gpu --size full is for a CUDA GPU (none is in use here); the dry run of the same "
                           "code on the CPU is --size tiny --device cpu")
    names = check_names(only, skip)
    start = time.perf_counter()
    ran = {p["name"]: p for p in run_check(names, size, device, cache, budget=budget, timeout=timeout,
                                           isolate=isolate, threads=threads, progress=progress)}
    return {"machine": info | device_info(device), "size": size, "device": str(device), "budget_s": budget,
            "seconds": time.perf_counter() - start,
            "parts": [ran.get(name) or skipped_by_option(name) for name in PARTS]}


def run_check(names: list[str], size: str, device: torch.device, cache: Path, *, budget: float, timeout: int,
              isolate: bool, threads: int, progress: Callable[[dict], None] = lambda part: None) -> list[dict]:
    """Every part of `names` in turn, each in a child process (`isolate`) within its time limit, while the
    `budget` (seconds, 0 = none) lasts; a part that no longer fits is recorded as skipped."""
    results, start = [], time.perf_counter()
    for name in names:
        limit = timeout or (PARTS[name].timeout if size == "full" else TINY_TIMEOUT)
        left = budget - (time.perf_counter() - start) if budget else limit
        if left < min(limit, 30):
            result = {"name": name, "title": PARTS[name].title, "goal": PARTS[name].goal, "status": "skipped",
                      "reason": f"the check's time budget ({budget:.0f} s, --budget) was spent"}
        elif isolate:
            result = _run_isolated(name, size, device, cache, min(limit, int(left)), threads)
        else:
            result = run_part(name, size, device, cache)
        results.append(result)
        progress(result)
    return results


def _run_isolated(name: str, size: str, device: torch.device, cache: Path, limit: int, threads: int) -> dict:
    """`dlcvkit bench gpu --only NAME --in-process` in a child process (its own process group), killed after
    `limit` seconds."""
    out = Path(tempfile.mkdtemp(prefix="part_", dir=cache)) / f"{name}.json"
    command = [sys.executable, "-m", "dlcvkit", "bench", "gpu", "--only", name, "--size", size, "--device",
               str(device), "--in-process", "--cache", str(cache), "--threads", str(threads), "--json", str(out)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    base = {"name": name, "title": PARTS[name].title, "goal": PARTS[name].goal}
    try:
        _, stderr = child.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # with its DataLoader workers and compile workers
        child.communicate()
        shutil.rmtree(out.parent, ignore_errors=True)
        return base | {"status": "skipped", "reason": f"timed out after {limit} s", "seconds": float(limit)}
    try:
        return next(p for p in json.loads(out.read_text())["parts"] if p["name"] == name)
    except (OSError, ValueError, KeyError, StopIteration):
        lines = [line for line in stderr.splitlines() if line.strip()]
        reason = f"the part's process exited {child.returncode}: {lines[-1] if lines else 'no message'}"
        return base | {"status": "failed", "reason": reason[:500]}
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def check_names(only: list[str], skip: list[str]) -> list[str]:
    """The parts to run, in their order; unknown names are an error."""
    for option, names in (("--only", only), ("--skip", skip)):
        unknown = [n for n in names if n not in PARTS]
        if unknown:
            raise DlcvkitError(f"{option} {unknown[0]}: no such part; the parts are {', '.join(PARTS)}")
    return [n for n in PARTS if (not only or n in only) and n not in skip]


def skipped_by_option(name: str) -> dict:
    return {"name": name, "title": PARTS[name].title, "goal": PARTS[name].goal, "status": "skipped",
            "reason": "not selected (--only / --skip)"}


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"[:500]


# ------------------------------------------------------------------------------------------------ reports


def device_info(device: torch.device) -> dict:
    """The GPU and its software, beside `timing.machine`'s CPU and versions."""
    if device.type != "cuda":
        return {"gpu": None}
    props = torch.cuda.get_device_properties(device)
    return {"gpu": props.name, "gpu_memory_mb": props.total_memory / 2**20, "gpus": torch.cuda.device_count(),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}


def print_summary(console, check: dict) -> None:
    """The summary table on the terminal (rich)."""
    from rich.table import Table

    parts = {p["name"]: p for p in check["parts"]}
    table = Table(title=f"dlcvkit bench gpu ({check['size']}, {check['device']}, {check['seconds']:.0f} s)",
                  title_justify="left")
    for column in ("part", "status", "result", "goal", "met", "peak MB"):
        table.add_column(column)
    for part in check["parts"]:
        text, met = summary(part, parts)
        table.add_row(part["name"], part["status"], text, part["goal"] or "-",
                      "-" if met is None else "[green]yes[/green]" if met else "[red]no[/red]",
                      f"{part['peak_mem_mb']:.0f}" if part.get("peak_mem_mb") is not None else "-")
    console.print(table)


def write_json(path: Path, check: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(check, indent=1, default=str) + "\n")


def markdown(check: dict) -> str:
    """The check as Markdown: a summary table (one row per part), then each part's records and checks."""
    parts = {p["name"]: p for p in check["parts"]}
    info = check["machine"]
    lines = ["# dlcvkit GPU check", "", machine_line(info), ""]
    if info["gpu"]:
        lines += [f"GPU: {info['gpus']} x {info['gpu']}, {info['gpu_memory_mb']:.0f} MB, CUDA {info['cuda']}, "
                  f"cuDNN {info['cudnn']}", ""]
    lines.append(f"size `{check['size']}`, device `{check['device']}`, {check['seconds']:.0f} s in all")
    if check["size"] == "tiny":
        lines.append("\n**Dry run** (toy sizes): it shows that every part runs; its figures mean nothing.")
    lines += ["", "| part | status | result | goal | met | peak GPU MB | s |", "|---|---|---|---|---|---|---|"]
    for part in check["parts"]:
        text, met = summary(part, parts)
        peak = f"{part['peak_mem_mb']:.0f}" if part.get("peak_mem_mb") is not None else "-"
        seconds = f"{part['seconds']:.0f}" if part.get("seconds") is not None else "-"
        lines.append(f"| {part['name']} | {part['status']} | {_cell(text)} | {part['goal'] or '-'} | "
                     f"{'-' if met is None else 'yes' if met else '**no**'} | {peak} | {seconds} |")
    for part in check["parts"]:
        lines += ["", f"## {part['name']}: {part['title']}", ""]
        if part["status"] != "ok":
            lines.append(f"{part['status']}: {part['reason']}")
            continue
        if part.get("records"):
            lines += ["| case | contender | per s | ms median | ms min-max | speedup | notes |",
                      "|---|---|---|---|---|---|---|"]
            lines += [_record_row(r) for r in part["records"]]
        for key, value in part.get("checks", {}).items():
            shown = f"\n```\n{value}```" if isinstance(value, str) and "\n" in value else f" `{json.dumps(value)}`"
            lines.append(f"- {key}:{shown}")
    return "\n".join(lines) + "\n"


def _record_row(r: dict) -> str:
    if r["ms_median"] is None:
        return f"| {r['case']} | {r['contender']} | - | - | - | | {_cell(r.get('error', ''))} |"
    notes = [f"overhead {r['overhead_pct']:+.1f}%" if r.get("overhead_pct") is not None else "",
             f"data wait {100 * r['data_wait']:.0f}%" if r.get("data_wait") is not None else ""]
    speedup = f"{r['speedup']:.2f}x vs {r['speedup_vs']}" if r.get("speedup") is not None else ""
    return (f"| {r['case']} | {r['contender']} | {r['samples_per_s']:.1f} | {r['ms_median']:.1f} | "
            f"{r['ms_min']:.1f}-{r['ms_max']:.1f} | {speedup} | {', '.join(n for n in notes if n)} |")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
