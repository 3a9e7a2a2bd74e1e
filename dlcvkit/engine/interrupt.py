"""Stop signals during training: Ctrl-C (SIGINT), SIGTERM (a scheduler's preemption or requeue, or its time limit)
and SIGUSR1 (a scheduler's warning before the time limit) finish the step, save a checkpoint and stop; the same
command with `--resume auto` (or `--resume RUN_DIR`) then continues exactly.

A handler only records the signal; the loop acts on it at a step boundary. The processes of a run must stop after
the same step, but a signal reaches them at different moments (or reaches only some of them), so after every step
they agree through an all-reduce of three flags (one per signal) over a CPU (gloo) process group. It moves 3 bytes
between the hosts and never waits for the GPU: next to a training step it costs nothing that can be measured, and
it bounds the time from a signal to the save by one step, where agreeing at the next log step (the loss
all-reduce) could outlast SLURM's 30 s between SIGTERM and SIGKILL. A single process needs no agreement.

Exit codes after the checkpoint is saved: 128 + the signal's number, as a shell reports a process ended by it
(130 Ctrl-C, 143 SIGTERM, 138 SIGUSR1 on Linux). Inside a SLURM job, SIGUSR1 also requeues the job once, from
the main process, after the save (`scontrol requeue $SLURM_JOB_ID`).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist

# Under `accelerate launch` a terminal Ctrl-C reaches each process twice within milliseconds: from the terminal
# and forwarded by the launcher. Only a second Ctrl-C pressed later than this aborts at once.
REPEAT_SECONDS = 1.0
# The signals that stop a run after a save, in increasing precedence: when several arrive, the last named decides
# the exit code (SIGUSR1 asks for the requeue that a preemption's SIGTERM would not do).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM", signal.SIGUSR1: "SIGUSR1"}
REQUEUE_TIMEOUT = 20.0  # seconds scontrol may take (SLURM's KillWait is 30 s by default)


class TrainingInterrupted(Exception):
    """Raised by the loop after it saved a checkpoint because of a stop signal; the CLI prints it and exits with
    `code`."""

    def __init__(self, message: str, code: int = 128 + signal.SIGINT) -> None:
        super().__init__(message)
        self.code = code


class StopRequest:
    """While active, the STOP_SIGNALS set flags instead of ending the process; a second Ctrl-C at least
    REPEAT_SECONDS later raises KeyboardInterrupt (stop without a new checkpoint; the previous ones stay).
    A repeated SIGTERM only repeats the request: SLURM and the launcher both send one."""

    def __init__(self, accelerator) -> None:
        self.announce = accelerator.is_main_process  # print the first request of each signal (main process)
        self.processes = accelerator.num_processes
        self.received: dict[int, float] = {}  # signal -> when this process first got it
        self.signals: list[int] = []  # the signals some process received, as agreed after the last step
        self._previous: dict[int, object] = {}
        self._group = None

    @property
    def requested(self) -> bool:
        return bool(self.received)

    def __enter__(self) -> StopRequest:
        if self.processes > 1:  # the loss all-reduce may run on NCCL; the flags go through the hosts
            self._group = None if "gloo" in dist.get_backend() else dist.new_group(backend="gloo")
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if signum not in self.received:
            self.received[signum] = now
            if self.announce:
                again = " (press Ctrl-C again to stop without it)" if signum == signal.SIGINT else ""
                print(f"\ndlcvkit: {NAMES[signum]}: saving a checkpoint after this step and stopping{again}",
                      file=sys.stderr, flush=True)
        elif signum == signal.SIGINT and now - self.received[signum] >= REPEAT_SECONDS:
            raise KeyboardInterrupt

    def agree(self) -> bool:
        """After every step, on every process: whether any process received a stop signal (the same answer on
        all of them, which `signals` then lists)."""
        flags = [s in self.received for s in STOP_SIGNALS]
        if self.processes > 1:  # a host tensor over gloo: no device sync, whatever the training backend
            reduced = torch.tensor(flags, dtype=torch.uint8)
            dist.all_reduce(reduced, op=dist.ReduceOp.MAX, group=self._group)
            flags = reduced.tolist()
        self.signals = [s for s, flag in zip(STOP_SIGNALS, flags) if flag]
        return bool(self.signals)

    def stopped(self, step: int, stop: int, run_dir: Path, main: bool) -> TrainingInterrupted:
        """After the checkpoint of `step` was saved: requeue the SLURM job where SIGUSR1 asks for it (main process),
        and the exception that ends the command with one line and 128 + the signal's number."""
        signum = self.signals[-1]
        if signum == signal.SIGUSR1 and main and os.environ.get("SLURM_JOB_ID"):
            print(f"dlcvkit: {requeue_slurm_job(os.environ['SLURM_JOB_ID'])}", file=sys.stderr, flush=True)
        return TrainingInterrupted(f"stopped after step {step} of {stop} by {NAMES[signum]}; the checkpoint is "
                                   f"saved: continue with --resume {run_dir} (or the same command with --resume "
                                   "auto)", code=128 + signum)


def requeue_slurm_job(job: str) -> str:
    """Ask SLURM to requeue `job` (which then runs the same batch script again); the line that says what happened."""
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=REQUEUE_TIMEOUT,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"could not requeue SLURM job {job} (scontrol requeue {job}: {e}); submit the job again"
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        return (f"could not requeue SLURM job {job} (scontrol requeue {job}: {why[-1] if why else 'exit ' + str(done.returncode)}); "
                "is it submitted with --requeue? submit the job again")
    return f"requeued SLURM job {job} (scontrol requeue {job}): it continues from this checkpoint"


def ignore_interrupts(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: a terminal's Ctrl-C, and a scheduler's SIGTERM or SIGUSR1 (SLURM signals every
    process of a job step), reach the loader workers too, and a worker that takes one ends, which would break the
    loader the loop still reads from until it saved and stopped."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def end_workers_at_exit() -> None:
    """Have this process end its loader workers when it exits (registered once). They ignore the stop signals,
    so multiprocessing's own clean-up at exit, a SIGTERM to each daemonic child and then a join, would wait
    forever for the workers of a loader that a failed run left open (and its peers in a collective with it)."""
    atexit.unregister(_end_workers)
    atexit.register(_end_workers)  # registered after multiprocessing's exit function, so run before it


def _end_workers() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # torch's handler would report each as a failed worker
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
            child.join()
