"""What a run reports: metrics.jsonl (one JSON object per logged step or evaluation), summary.csv (one row per
evaluation), the rich progress bar on a terminal or plain progress lines in a log file, the trackers of
`train.trackers` through accelerate, and the end-of-run summary; all on the main process only."""

from __future__ import annotations

import csv
import datetime
import io
import json
import math
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from dlcvkit.engine.checkpoint import kept_checkpoint
from dlcvkit.diskfull import append, write_atomic
from dlcvkit.engine.rundir import run_files
from dlcvkit.errors import DlcvkitError
from dlcvkit.runnames import BEST_FILE, METRICS_FILE, SUMMARY_FILE


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of a run's metrics.jsonl."""
    path = Path(run_dir) / METRICS_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


class RunLog:
    """Accumulates the training loss on the device and reads it back every `log_every` steps (the loop's only
    host sync), writes records, and drives the progress bar."""

    def __init__(
        self,
        accelerator: Accelerator,
        run_dir: Path,
        *,
        start_step: int,
        stop_step: int,
        log_every: int,
        samples_per_step: int,
        progress_seconds: float = 30.0,
    ) -> None:
        self.accelerator, self.main = accelerator, accelerator.is_main_process
        self.path = Path(run_dir) / METRICS_FILE
        self.stop_step, self.log_every, self.samples_per_step = stop_step, max(1, log_every), samples_per_step
        self._loss_sum = torch.zeros((), device=accelerator.device)
        self._count, self._data_wait, self._t0, self._step0 = 0, 0.0, time.perf_counter(), start_step
        self.last_loss = float("nan")
        if self.main:
            # Records after the checkpoint we resume from belong to the lost part of the run: drop them.
            kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= start_step]
            write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
            write_summary_csv(kept, self.path.parent / SUMMARY_FILE)
        self.console = Console(stderr=True)
        # A log file (SLURM, nohup) gets a plain line every `progress_seconds` instead of a bar it cannot redraw.
        self.plain = self.main and not self.console.is_terminal
        self.progress_seconds, self._start, self._start_step = progress_seconds, time.perf_counter(), start_step
        self._last_line = -math.inf
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.main or self.plain,
        )
        self._bar = self.progress.add_task("train", total=stop_step, completed=start_step, loss="-", lr="-", speed="")

    def __enter__(self) -> RunLog:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def print(self, message: str) -> None:
        """A line for the user (main process), printed above the progress bar."""
        if self.main:
            self.progress.console.print(message, highlight=False, soft_wrap=True)

    def train_step(self, step: int, epoch: int, loss: torch.Tensor, lr: float, data_wait: float, extra: dict) -> None:
        """Account one optimizer step (`step` = steps done); every `log_every` steps read back and record."""
        self._loss_sum += loss.detach().float()
        self._count += 1
        self._data_wait += data_wait
        self.progress.update(self._bar, completed=step)
        if step % self.log_every == 0 or step == self.stop_step:
            self.flush(step, epoch, lr, extra)

    def flush(self, step: int, epoch: int, lr: float, extra: dict) -> None:
        """Record the mean loss since the last record; raise if it is not finite."""
        if self._count == 0:
            return
        # Mean over all processes' local losses (= the global batch's loss): the interval's one host sync. Every
        # rank gets the same value, so a non-finite loss stops all of them after the same step.
        if self.accelerator.num_processes > 1:
            loss_sum = float(self.accelerator.reduce(self._loss_sum, "sum")) / self.accelerator.num_processes
        else:
            loss_sum = float(self._loss_sum)
        loss = loss_sum / self._count
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        steps = step - self._step0
        record = {
            "step": step,
            "epoch": epoch,
            "loss": loss,
            "lr": lr,
            "samples_per_s": steps * self.samples_per_step / elapsed,
            "data_wait": self._data_wait / elapsed,
            **extra,
        }
        self._loss_sum.zero_()
        self._count, self._data_wait, self._t0, self._step0 = 0, 0.0, time.perf_counter(), step
        if not math.isfinite(loss):
            raise DlcvkitError(
                f"the training loss became {loss} by step {step}; {kept_checkpoint(self.path.parent)} "
                "(lower optim.lr, set train.clip_grad_norm, or check the data)"
            )
        self.last_loss = loss
        self.progress.update(
            self._bar, loss=f"{loss:.4f}", lr=f"{lr:.2e}", speed=f"{record['samples_per_s']:.1f} img/s"
        )
        self.write(record)
        self._progress_line(record)

    def _progress_line(self, record: dict) -> None:
        """Without a terminal: `step 20/100 (20%)  epoch 2  loss ...  lr ...  img/s  elapsed 0:00:41  ETA
        0:02:44`, at most every `progress_seconds`, and always at the last step."""
        now = time.perf_counter()
        step = record["step"]
        if not self.plain or (now - self._last_line < self.progress_seconds and step < self.stop_step):
            return
        self._last_line = now
        elapsed = now - self._start
        done = step - self._start_step
        eta = elapsed / done * (self.stop_step - step) if done else math.nan
        self.print(f"step {step}/{self.stop_step} ({100 * step / max(self.stop_step, 1):.0f}%)  "
                   f"epoch {record['epoch']}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
                   f"{record['samples_per_s']:.1f} img/s  elapsed {clock(elapsed)}  ETA {clock(eta)}")

    def write(self, record: dict) -> None:
        """Append one record to metrics.jsonl (and the trackers); an evaluation also rewrites summary.csv."""
        if not self.main:
            return
        append(self.path, json.dumps(record) + "\n")
        if record.get("split") == "val":
            write_summary_csv(read_metrics(self.path.parent), self.path.parent / SUMMARY_FILE)
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k not in ("step",)}
        if self.accelerator.trackers:
            prefix = f"{record['split']}/" if "split" in record else "train/"
            self.accelerator.log({prefix + k: v for k, v in numbers.items()}, step=record["step"])


def clock(seconds: float) -> str:
    """`H:MM:SS` (`-:--:--` when unknown)."""
    return str(datetime.timedelta(seconds=round(seconds))) if math.isfinite(seconds) else "-:--:--"


def write_summary_csv(records: list[dict], path: Path) -> None:
    """One row per evaluation, as timm's summary.csv: step, epoch, the last training loss and LR logged by then,
    and the validation metrics (numbers only). No evaluation, no file."""
    rows, last_train = [], {}
    for record in records:
        if "split" not in record:
            last_train = record
        elif record["split"] == "val":
            metrics = {k: v for k, v in record.items() if k not in ("step", "epoch", "split")
                       and isinstance(v, (int, float)) and not isinstance(v, bool)}
            rows.append({"step": record["step"], "epoch": record["epoch"], "train_loss": last_train.get("loss"),
                         "lr": last_train.get("lr"), **metrics})
    if not rows:
        path.unlink(missing_ok=True)
        return
    fields = list(dict.fromkeys(k for row in rows for k in row))
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, table.getvalue())


def end_of_run(summary: dict, run_dir: Path, task_files: tuple[str, ...] = ()) -> list[str]:
    """The lines that close a run (`fit`'s summary): steps run of planned and wall time, the final metrics, the
    best metric by name with its epoch and step, and the files in the run folder (the engine's and `task_files`,
    its Task's)."""
    run_dir = Path(run_dir)
    step, total = summary["step"], summary["total_steps"]
    cut = f"stopped early (--max-steps): {step} of {total} steps, " if step < total else f"done: {step} steps, "
    lines = [f"{cut}epoch {summary['epoch']} of {summary['epochs']}, in {clock(summary['wall_s'])}"]
    if summary["metrics"]:
        lines.append(f"final (step {step}): {format_metrics(summary['metrics'])}")
    if summary["best"] is not None:
        lines.append(f"best {summary['best_metric']} {summary['best']:.4f} at epoch {summary['best_epoch']} "
                     f"(step {summary['best_step']}): {run_dir / BEST_FILE}")
    written = [f"{name}/" if (run_dir / name).is_dir() else name for name in run_files(task_files)
               if (run_dir / name).exists()]
    lines.append(f"files in {run_dir}: {', '.join(written)}")
    return lines


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`1 process`, `2 processes`: a count with its noun in the right number (never "process(es)")."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def format_metrics(metrics: dict) -> str:
    """`acc 0.9123  loss 0.3000`: the scalar metrics, four decimals."""
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
                     if not isinstance(v, (list, dict)))
