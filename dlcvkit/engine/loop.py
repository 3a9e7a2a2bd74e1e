"""The one training loop every recipe runs: batch, augment on the device, forward, loss, backward, step,
schedule, EMA, log, evaluate, checkpoint. Tasks plug in through `dlcvkit.engine.task.Task`."""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device, set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dlcvkit.config import flat_recipe, write_recipe
from dlcvkit.data.cache import cache_splits
from dlcvkit.data.samples import FileDataset
from dlcvkit.data.unreadable import skip_unreadable
from dlcvkit.diskfull import DiskFull, no_room
from dlcvkit.engine.checkpoint import (kept_checkpoint, latest_checkpoint, load_checkpoint, process_count_note,
                                      save_checkpoint)
from dlcvkit.engine.distributed import (compute_threads, convert_sync_batchnorm, make_accelerator,
                                        use_deterministic_kernels)
from dlcvkit.engine.ema import EMA
from dlcvkit.engine.interrupt import StopRequest
from dlcvkit.engine.loaders import device_batches, make_eval_loader, make_train_loader
from dlcvkit.engine.optim import build_optimizer
from dlcvkit.engine.rundir import prepare_run_dir
from dlcvkit.engine.runlog import RunLog, counted, format_metrics
from dlcvkit.engine.sampling import TrainBatches
from dlcvkit.engine.schedule import lr_factor, set_lr
from dlcvkit.engine.task import RunContext, Task
from dlcvkit.engine.trackers import finish_trackers, start_trackers
from dlcvkit.engine.weights import non_finite_key, save_weights
from dlcvkit.errors import DlcvkitError
from dlcvkit.runnames import BEST_FILE, EMA_FILE, MODEL_FILE, RECIPE_FILE


def fit(task: Task, run_dir: Path, *, max_steps: int = 0, resume: bool = False, overwrite: bool = False) -> dict:
    """Train `task` into `run_dir` (from its latest checkpoint with `resume`; replacing the run there with
    `overwrite`); stop after `max_steps` optimizer steps if given, without changing the schedules.
    Returns {"step", "metrics", "best", ...}: see `dlcvkit.engine.runlog.end_of_run`.
    A full disk (or quota, or file-size limit) stops the run with one line: the file, why, and the checkpoint kept."""
    start = time.perf_counter()
    recipe, train, run_dir = task.recipe, task.recipe.train, Path(run_dir)
    with _full_disk_named(run_dir):  # a lack of room anywhere: one line naming the file and the checkpoint kept
        run = _set_up(task, run_dir, max_steps, resume, overwrite)
        accelerator, model, optimizer, ctx = run.accelerator, run.model, run.optimizer, run.ctx
        total_steps, steps_per_epoch, stop, accum = run.total_steps, run.steps_per_epoch, run.stop, train.grad_accum
        step, batches, schedule = run.state["step"], None, recipe.schedule
        with (RunLog(accelerator, run_dir, start_step=step, stop_step=stop, log_every=train.log_every,
                     samples_per_step=recipe.data.batch_size * accum, progress_seconds=train.progress_seconds) as log,
              StopRequest(accelerator) as interrupt):
            for note in run.notes:
                log.print(note)
            if step < stop:
                log.print(f"{task.__class__.__name__}: {total_steps} steps ({steps_per_epoch}/epoch), "
                          f"{counted(accelerator.num_processes, 'process', 'processes')} on {accelerator.device}, "
                          f"from step {step} to {stop}")
            while step < stop:
                if batches is None:  # start, or resume in the middle of, an epoch
                    batches = _epoch_batches(run, step, accum)
                set_lr(optimizer, lr_factor(step, total_steps, run.warmup, schedule.decay, schedule.min_lr_ratio,
                                            schedule.power))
                data_wait, micro_losses = 0.0, []
                for micro in range(accum):
                    t0 = time.perf_counter()
                    batch = send_to_device(next(batches), accelerator.device, non_blocking=True)
                    data_wait += time.perf_counter() - t0
                    with torch.no_grad():
                        batch = task.augment(batch)
                    sync = contextlib.nullcontext() if micro == accum - 1 else accelerator.no_sync(model)
                    with sync, accelerator.autocast():
                        loss = task.loss(model, batch)
                        accelerator.backward(loss / accum)
                    micro_losses.append(loss.detach())
                # the step's loss is that of its whole batch (the mean over equal micro-batches), not the last one's
                loss = torch.stack(micro_losses).mean()
                if train.clip_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), train.clip_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                for ema in run.emas:
                    ema.update(step)
                step += 1
                ctx.step, ctx.epoch = step, step // steps_per_epoch
                extra = {"tau": run.emas[0].tau(step - 1)} if run.emas else {}
                log.train_step(step, ctx.epoch, loss, optimizer.param_groups[0]["lr"], data_wait, extra)
                stopping = interrupt.agree()  # every process, every step: a stop signal stops all after this step
                if step % steps_per_epoch == 0:
                    batches = None  # the epoch is done
                _end_of_step(task, run, log, extra, stopping, interrupt)
        return _end_of_run(task, run, start)


@dataclass
class _Run:
    """What `fit` sets up before its first step."""

    accelerator: Accelerator
    model: nn.Module  # as accelerate prepared it (DDP, compiled): the one trained
    net: nn.Module  # the plain module: clean state_dict keys
    ema_model: nn.Module | None  # train.model_ema's copy of the model
    emas: list[EMA]  # the task's and the model's, updated after every step
    optimizer: torch.optim.Optimizer
    sampler: TrainBatches
    loader: DataLoader
    val_loader: DataLoader | None
    state: dict  # kept in every checkpoint: step, best, best_step, ...
    ctx: RunContext
    notes: list[str]  # printed before the first step
    steps_per_epoch: int
    total_steps: int  # the schedule's length
    warmup: int
    stop: int  # the step this call stops after
    extra_models: dict[str, nn.Module]  # checkpointed beside the model: its EMA copy
    metrics: dict = field(default_factory=dict)  # the last evaluation's


def _set_up(task: Task, run_dir: Path, max_steps: int, resume: bool, overwrite: bool) -> _Run:
    """The processes, the data (checked before a new run's folder exists: bad input leaves none behind), the
    model, optimizer and EMAs, and the state: from the latest checkpoint with `resume`, else a new run folder."""
    recipe, train = task.recipe, task.recipe.train
    accelerator = make_accelerator(train, run_dir)  # also refuses a tracker that is not installed
    torch.set_num_threads(compute_threads(train.threads))
    if train.deterministic:
        use_deterministic_kernels()
    elif accelerator.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if resume:  # only read: a folder without a run to resume says so before anything else
        prepare_run_dir(accelerator, run_dir, resume=True, overwrite=overwrite)
    train_set, val_set, notes = _open_data(task)
    sampler = TrainBatches(
        len(train_set), recipe.data.batch_size, accelerator.process_index, accelerator.num_processes, train.seed
    )
    accum = train.grad_accum
    steps_per_epoch = sampler.batches_per_epoch // accum
    if steps_per_epoch == 0:
        raise DlcvkitError(f"train.grad_accum={accum} is more than the {sampler.batches_per_epoch} batches per epoch")
    if dropped := _dropped_samples(len(train_set), recipe.data.batch_size, accum, steps_per_epoch):
        notes.append(dropped)
    if not resume:
        prepare_run_dir(accelerator, run_dir, resume=False, overwrite=overwrite, task_files=task.run_files)

    model = _build_model(task, accelerator)
    (train_set, val_set), cache_notes = cache_splits(  # with data.cache: decoded once, then read as slices
        {"data.train": train_set, "data.val": val_set}, recipe.data.cache, recipe.data.cache_dir,
        workers=recipe.data.num_workers, accelerator=accelerator)
    loader = make_train_loader(train_set, sampler, recipe.data.num_workers, accelerator.device, task.collate)
    val_loader = (make_eval_loader(val_set, recipe.data, accelerator, collate=task.collate)
                  if val_set is not None else None)
    total_steps = train.epochs * steps_per_epoch
    warmup = recipe.schedule.warmup_steps or round(recipe.schedule.warmup_epochs * steps_per_epoch)

    optimizer = build_optimizer(recipe.optim, task.param_groups(model), recipe.data.batch_size * accum)
    model, optimizer = accelerator.prepare(model, optimizer)
    net = accelerator.unwrap_model(model, keep_torch_compile=False)  # plain module: clean state_dict keys
    emas = task.emas(net, total_steps)
    ema_model = None
    if train.model_ema > 0:
        ema_model = copy.deepcopy(net).eval().requires_grad_(False)
        emas.append(EMA(net, ema_model, train.model_ema))
    extra_models = {"ema": ema_model} if ema_model is not None else {}
    stop = min(total_steps, max_steps) if max_steps > 0 else total_steps
    state = _start_state(task, accelerator, run_dir, max_steps, resume, extra_models, notes)
    state.update(best_metric=task.best_metric, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    if accelerator.log_with:
        start_trackers(accelerator, run_dir, flat_recipe(recipe), state["step"] if resume else None)
    ctx = task.context = RunContext(accelerator, run_dir, state["step"], state["step"] // steps_per_epoch,
                                    total_steps, steps_per_epoch)
    return _Run(accelerator=accelerator, model=model, net=net, ema_model=ema_model, emas=emas, optimizer=optimizer,
                sampler=sampler, loader=loader, val_loader=val_loader, state=state, ctx=ctx,
                notes=notes + cache_notes, steps_per_epoch=steps_per_epoch, total_steps=total_steps, warmup=warmup,
                stop=stop, extra_models=extra_models)


def _build_model(task: Task, accelerator: Accelerator) -> nn.Module:
    """The task's model, with the same initial weights on every process."""
    train = task.recipe.train
    set_seed(train.seed)
    model = task.build_model()
    if train.sync_bn and accelerator.num_processes > 1:
        model = convert_sync_batchnorm(model, accelerator.device)
    if train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    set_seed(train.seed, device_specific=True)  # then each process draws its own augmentations
    return model


def _start_state(task: Task, accelerator: Accelerator, run_dir: Path, max_steps: int, resume: bool,
                 extra_models: dict[str, nn.Module], notes: list[str]) -> dict:
    """The latest checkpoint's state (its weights loaded) with `resume`, a note where the process count changed;
    else a new run's, its recipe written."""
    seed = task.recipe.train.seed
    if resume:
        state = load_checkpoint(accelerator, latest_checkpoint(run_dir), extra_models, seed)
        if note := process_count_note(state, accelerator.num_processes, seed):
            notes.append(note)
        if 0 < max_steps < state["step"]:
            raise DlcvkitError(f"--max-steps {max_steps}: the run in {run_dir} is already at step {state['step']}")
        return state
    if accelerator.is_main_process:  # written once the model and the data opened: a bad input leaves no run
        write_recipe(task.recipe, run_dir / RECIPE_FILE)
        task.start(run_dir)
    return {"step": 0, "best": None, "best_step": None, "best_epoch": None}


def _epoch_batches(run: _Run, step: int, accum: int):
    """The training batches from `step` on: from the start of an epoch or, on resume, from the middle of one."""
    epoch, done = divmod(step, run.steps_per_epoch)
    run.sampler.set_position(epoch, done * accum)
    batches = iter(run.loader)
    run.model.train()
    return batches


def _end_of_step(task: Task, run: _Run, log: RunLog, extra: dict, stopping: bool, interrupt: StopRequest) -> None:
    """Evaluate (every `train.eval_every` epochs and after the last step), end the epoch, checkpoint (every epoch,
    every `train.ckpt_every` steps, after the last step, on a stop request), and stop on a stop request."""
    train, ctx, accelerator = task.recipe.train, run.ctx, run.accelerator
    step, run_dir = ctx.step, ctx.run_dir
    epoch_done = step % run.steps_per_epoch == 0
    eval_due = epoch_done and train.eval_every > 0 and ctx.epoch % train.eval_every == 0
    if run.val_loader is not None and (eval_due or step == run.stop):
        _check_finite(run.net, run.ema_model, step, run_dir)  # a diverged model is neither evaluated nor kept
        run.metrics = _evaluate(task, run.net, run.ema_model, run.val_loader, ctx, log)
        _keep_best(task, accelerator, run.net, run.metrics, run.state, ctx, run_dir)
    if epoch_done:
        task.after_epoch(run.net, ctx)
    if epoch_done or step == run.stop or (train.ckpt_every and step % train.ckpt_every == 0) or stopping:
        log.flush(step, ctx.epoch, run.optimizer.param_groups[0]["lr"], extra)  # never save a diverged model
        _check_finite(run.net, run.ema_model, step, run_dir)
        run.state.update(step=step, epoch=ctx.epoch)
        save_checkpoint(accelerator, run_dir, run.state, train.keep_checkpoints, run.extra_models)
    if stopping and step < run.stop:
        finish_trackers(accelerator)
        raise interrupt.stopped(step, run.stop, run_dir, accelerator.is_main_process)


def _end_of_run(task: Task, run: _Run, start: float) -> dict:
    """The final weights (and the model EMA's) written, the task's export; the run's summary."""
    accelerator, net, ctx, train = run.accelerator, run.net, run.ctx, task.recipe.train
    step = ctx.step
    if accelerator.is_main_process:
        save_weights(net.state_dict(), ctx.run_dir / MODEL_FILE, {"step": str(step)})
        if run.ema_model is not None:  # the model EMA is only useful if inference can load it
            save_weights(run.ema_model.state_dict(), ctx.run_dir / EMA_FILE, {"step": str(step)})
        task.export(net, ctx)
    accelerator.wait_for_everyone()
    finish_trackers(accelerator)
    state = run.state
    return {"step": step, "total_steps": run.total_steps, "epoch": step // run.steps_per_epoch, "epochs": train.epochs,
            "metrics": run.metrics, "best": state["best"], "best_metric": task.best_metric,
            "best_step": state["best_step"], "best_epoch": state.get("best_epoch"),
            "wall_s": time.perf_counter() - start}


@contextlib.contextmanager
def _full_disk_named(run_dir: Path):
    """A write that fails for lack of room (a full disk, a quota, the file-size limit), in the error type of
    whichever library wrote: one line naming the file, why, and the checkpoint kept."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - a lack of room comes in the types of every library that writes
        why = e.why if isinstance(e, DiskFull) else no_room(e, run_dir)
        if why is None:
            raise
        what = e.path if isinstance(e, DiskFull) else getattr(e, "filename", None) or f"a file in {run_dir}"
        then = (f"free space, then continue with --resume {run_dir}" if latest_checkpoint(run_dir) else
                "free space, then start the run again")
        raise DlcvkitError(f"cannot write {what}: {why}; {kept_checkpoint(run_dir)}: {then}") from None


def _open_data(task: Task) -> tuple[Dataset, Dataset | None, list[str]]:
    """(training set, validation set, notes): with `data.skip_bad` the samples whose files do not decode are
    left out (the notes say which); then every file's header is checked (sizes, mask modes), so that a bad
    input stops the run before its first step. Every process checks alike and keeps the same samples."""
    data = task.recipe.data
    datasets = {"data.train": task.train_dataset(), "data.val": task.val_dataset()}
    notes = []
    for key, dataset in datasets.items():
        if dataset is None:
            continue
        if data.skip_bad:
            notes.append(skip_unreadable(dataset, f"{key} (data.skip_bad)", data.num_workers))
        if isinstance(dataset, FileDataset):
            dataset.check(data.num_workers)
    return datasets["data.train"], datasets["data.val"], notes


def _evaluate(task: Task, net: nn.Module, ema_model: nn.Module | None, val_loader, ctx: RunContext,
              log: RunLog) -> dict:
    """Evaluate the model (and its EMA, as `ema_*`) on the validation set; log the result."""
    accelerator = ctx.accelerator
    net.eval()
    with accelerator.autocast():
        metrics = task.evaluate(net, device_batches(val_loader, accelerator.device), ctx)
        if ema_model is not None:
            ema = task.evaluate(ema_model, device_batches(val_loader, accelerator.device), ctx)
            metrics |= {f"ema_{k}": v for k, v in ema.items()}
    log.write({"step": ctx.step, "epoch": ctx.epoch, "split": "val", **metrics})
    log.print(f"epoch {ctx.epoch} step {ctx.step} val: {format_metrics(metrics)}")
    return metrics


def _keep_best(task: Task, accelerator, net: nn.Module, metrics: dict, state: dict, ctx: RunContext,
               run_dir: Path) -> None:
    """Write best.safetensors when the task's `best_metric` improves."""
    value = metrics.get(task.best_metric) if task.best_metric else None
    if value is None or (state["best"] is not None and value <= state["best"]):
        return
    step = ctx.step
    state.update(best=value, best_step=step, best_epoch=ctx.epoch)
    if accelerator.is_main_process:
        save_weights(net.state_dict(), run_dir / BEST_FILE, {"step": str(step), task.best_metric: str(value)})


def _dropped_samples(samples: int, batch_size: int, accum: int, steps_per_epoch: int) -> str | None:
    """The warning when an epoch leaves samples out: only whole (accumulated) batches are trained on."""
    dropped = samples - steps_per_epoch * accum * batch_size
    if not dropped:
        return None
    batch = f"batch {batch_size}" + (f" x train.grad_accum {accum}" if accum > 1 else "")
    return (f"warning: data.train: {samples} samples at {batch}: {dropped} dropped per epoch (a different "
            f"{dropped} each epoch; make data.batch_size divide the training set to use all)")


def _check_finite(net: nn.Module, ema_model: nn.Module | None, step: int, run_dir: Path) -> None:
    """Refuse to evaluate or checkpoint non-finite weights (BatchNorm statistics included): an update can make
    them inf/nan while the loss that led to it was still finite (and the loss is read only every log step), and
    the evaluation would then keep them as best or the checkpoint overwrite a good one. One host sync per model."""
    for name, model in (("model", net), ("model EMA", ema_model)):
        if model is not None and (key := non_finite_key(model.state_dict())) is not None:
            raise DlcvkitError(
                f"the {name}'s weights became inf/nan at step {step} (first in '{key}'); {kept_checkpoint(run_dir)} "
                "(lower optim.lr, set train.clip_grad_norm, or check the data)"
            )
