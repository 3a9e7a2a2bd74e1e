"""Training throughput: the engine's real step (augment + forward + backward + optimizer + EMA, as
`dlcvkit.engine.loop.fit` runs it) next to a bare PyTorch loop on the same model, data, augmentation, optimizer
and EMAs. Three contenders per case:

- `bare`: a plain loop (no Accelerate, no logging, no LR schedule) over batches already in memory;
- `dlcvkit`: `fit` itself with the loader in the main process (`num_workers = 0`); each `log_every` interval's
  time comes from metrics.jsonl (`samples_per_s`) less the time spent fetching batches (`data_wait`), so it
  compares with `bare`: the difference is the engine's overhead;
- `dlcvkit_loader`: `fit` as a user runs it, with loader workers: wall-clock samples/s and the fraction of it
  spent waiting for data.

The first `warmup` intervals of each contender are not timed (first-call allocations, torch.compile).
"""

from __future__ import annotations

import itertools
import shutil
import statistics
import tempfile
from pathlib import Path

import torch
from accelerate.state import AcceleratorState
from accelerate.utils import send_to_device, set_seed
from torch.utils.data import DataLoader, Dataset

from dlcvkit.bench.timing import Timing, measure, record
from dlcvkit.config import Recipe
from dlcvkit.data.synth import synth_cls, synth_seg, synth_ssl
from dlcvkit.engine.distributed import pick_device
from dlcvkit.engine.loop import fit
from dlcvkit.engine.optim import build_optimizer
from dlcvkit.engine.runlog import read_metrics
from dlcvkit.errors import DlcvkitError
from dlcvkit.tasks.registry import task_classes

BENCH = "train"
REFERENCE = "bare"
TASKS = {"byol": "byol", "cls": "classify", "seg": "segment"}  # --task -> registered task name
PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
SYNTH_IMAGES, SYNTH_CLASSES = 64, 10  # files written once; the runs cycle over them (see Repeated)
BARE_BATCHES = 4  # distinct batches the bare loop cycles over


class Repeated(Dataset):
    """`length` samples cycling over `dataset`: one epoch then covers the whole timed run, so no epoch-end
    checkpoint falls inside a timed interval, without writing thousands of files."""

    def __init__(self, dataset: Dataset, length: int) -> None:
        self.dataset, self.length = dataset, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        return self.dataset[i % len(self.dataset)]


def bench_train(
    task: str,
    model: str,
    *,
    img_size: int,
    batch: int,
    cache: Path,
    segmenter: str = "fcn8s",
    precision: str = "fp32",
    channels_last: bool = False,
    compile: bool = False,
    interval: int,
    repeats: int,
    warmup: int,
    workers: int,
    device: torch.device | None = None,
    contenders: tuple[str, ...] = ("bare", "dlcvkit", "dlcvkit_loader"),
) -> list[dict]:
    """Records of `contenders` (of `bare`, `dlcvkit` and `dlcvkit_loader`) for one training configuration, on
    `device` (default: a GPU if present)."""
    if task not in TASKS:
        raise DlcvkitError(f"--task {task}: choose one of {', '.join(TASKS)}")
    if precision not in PRECISIONS:
        raise DlcvkitError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and not torch.cuda.is_available():
        raise DlcvkitError("--precision fp16 needs a GPU; use bf16 (or fp32) on the CPU")
    steps = (warmup + repeats) * interval
    data = synthetic_data(task, img_size, cache)
    recipe_cls, task_cls = task_classes(TASKS[task])
    bench_task = type(task_cls.__name__, (task_cls,), {
        "train_dataset": lambda self: Repeated(task_cls.train_dataset(self), steps * batch),
    })

    def make_recipe(num_workers: int) -> Recipe:
        recipe = recipe_cls()
        recipe.data.train, recipe.data.img_size, recipe.data.batch_size = str(data), img_size, batch
        recipe.data.num_workers = num_workers
        recipe.model.backbone = model
        if task == "cls":
            recipe.model.num_classes = SYNTH_CLASSES
        if task == "seg":
            recipe.model.name = segmenter
        t = recipe.train
        t.epochs, t.log_every, t.precision = 1, interval, PRECISIONS[precision]
        t.channels_last, t.compile, t.tensorboard, t.keep_checkpoints = channels_last, compile, False, 1
        t.cpu = device is not None and device.type == "cpu"
        return recipe

    name = f"{segmenter}/{model}" if task == "seg" else model
    case = f"{task} {name} {img_size}px b{batch} {precision}" + " cl" * channels_last + " compiled" * compile
    params = {"task": task, "model": name, "img_size": img_size, "batch": batch, "precision": precision,
              "channels_last": channels_last, "compile": compile, "interval_steps": interval}
    records = []
    if "bare" in contenders:
        bare = bare_loop(bench_task(make_recipe(0)), interval=interval, repeats=repeats, warmup=warmup)
        records.append(record(BENCH, case, "bare", bare, **params))
    if "dlcvkit" in contenders:
        engine, engine_wait = engine_run(bench_task(make_recipe(0)), cache, steps=steps, warmup=warmup)
        overhead = 100 * (engine.median / bare.median - 1) if "bare" in contenders else None
        records.append(record(BENCH, case, "dlcvkit", engine, **params, workers=0, overhead_pct=overhead,
                              data_wait=engine_wait))
    if "dlcvkit_loader" in contenders:
        loaded, loader_wait = engine_run(bench_task(make_recipe(workers)), cache, steps=steps, warmup=warmup)
        records.append(record(BENCH, case, "dlcvkit_loader", loaded, **params, workers=workers,
                              data_wait=loader_wait))
    return records


def synthetic_data(task: str, img_size: int, cache: Path) -> Path:
    """A small synthetic training folder of the task's layout, made once per cache folder."""
    folder = cache / f"train_{task}_{img_size}"
    if not (folder / ".complete").exists():
        if task == "byol":
            synth_ssl(folder, SYNTH_IMAGES, img_size, SYNTH_CLASSES, overwrite=True)
        elif task == "cls":
            synth_cls(folder, SYNTH_IMAGES, img_size, SYNTH_CLASSES, overwrite=True)
        else:
            synth_seg(folder, SYNTH_IMAGES // 4, img_size, overwrite=True)  # 512 px pairs are slow to make
        (folder / ".complete").touch()
    return folder


def bare_loop(task, *, interval: int, repeats: int, warmup: int) -> Timing:
    """The plain PyTorch loop: augment, forward under autocast, backward, optimizer step, EMAs; one host sync
    per interval (reading the loss), as the engine's log does."""
    recipe = task.recipe
    device = torch.device("cpu") if recipe.train.cpu else pick_device()  # as fit's
    set_seed(recipe.train.seed)
    model = task.build_model().to(device).train()
    if recipe.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(recipe.optim, task.param_groups(model), recipe.data.batch_size)
    emas = task.emas(model, (warmup + repeats) * interval)
    forward = torch.compile(model) if recipe.train.compile else model
    loader = DataLoader(task.train_dataset(), batch_size=recipe.data.batch_size, num_workers=0)
    batches = [send_to_device(b, device) for b in itertools.islice(loader, BARE_BATCHES)]
    precision = recipe.train.precision
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    step = 0

    def run() -> None:
        nonlocal step
        for _ in range(interval):
            with torch.no_grad():
                batch = task.augment(batches[step % len(batches)])
            with torch.autocast(device.type, dtype=dtype, enabled=precision != "no"):
                loss = task.loss(forward, batch)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            for ema in emas:
                ema.update(step)
            step += 1
        loss.item()  # the interval's one host sync

    return measure(run, items=interval * recipe.data.batch_size, repeats=repeats, warmup=warmup, device=device)


def engine_run(task, cache: Path, *, steps: int, warmup: int) -> tuple[Timing, float]:
    """Run `fit` for `steps` optimizer steps; (the intervals' times less their data wait when the loader runs
    in the main process, else their wall-clock times; the median fraction of time spent waiting for data)."""
    recipe = task.recipe
    interval, batch = recipe.train.log_every, recipe.data.batch_size
    # fit builds a new Accelerator; accelerate keeps one process-wide state, which must match its settings
    AcceleratorState._reset_state(reset_partial_state=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run_", dir=cache))
    try:
        fit(task, run_dir / "run", max_steps=steps)
        logged = [r for r in read_metrics(run_dir / "run") if "samples_per_s" in r][warmup:]
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    waits = [r["data_wait"] for r in logged]
    in_main = recipe.data.num_workers == 0  # then fetching a batch blocks the step and is not the engine's cost
    seconds = [interval * batch / r["samples_per_s"] * (1 - r["data_wait"] * in_main) for r in logged]
    return Timing(seconds, interval * batch), statistics.median(waits)
