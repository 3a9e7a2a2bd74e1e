"""Ctrl-C during training: finish the step, save a checkpoint, stop; `--resume` then continues exactly.

The processes of a run must stop after the same step, but a Ctrl-C reaches them at different moments (or
reaches only some of them), and checking a flag with a collective every step would add a host sync per step.
So each process only records the request; the request travels in the all-reduce that already brings the
training loss back every `train.log_every` steps (`RunLog.flush`), and every process stops after the first
such step whose reduced request is set. A single process needs no agreement and stops after the current step.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

# Under `accelerate launch` a terminal Ctrl-C reaches each process twice within milliseconds: from the terminal
# and forwarded by the launcher. Only a second Ctrl-C pressed later than this aborts at once.
REPEAT_SECONDS = 1.0


class TrainingInterrupted(Exception):
    """Raised by the loop after it saved a checkpoint because of a Ctrl-C; the CLI prints it and exits 130."""


class StopRequest:
    """While active, SIGINT sets `requested` instead of raising KeyboardInterrupt; a second SIGINT at least
    REPEAT_SECONDS later raises KeyboardInterrupt (stop without a new checkpoint; the previous ones stay)."""

    def __init__(self, announce: bool) -> None:
        self.announce = announce  # print the first request (main process)
        self.requested = False
        self._first = 0.0
        self._previous = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if not self.requested:
            self.requested, self._first = True, now
            if self.announce:
                print("\ndlcvkit: Ctrl-C: saving a checkpoint and stopping (press Ctrl-C again to stop without it)",
                      file=sys.stderr, flush=True)
        elif now - self._first >= REPEAT_SECONDS:
            raise KeyboardInterrupt


def ignore_interrupts(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: a terminal's Ctrl-C reaches the loader workers too, and a worker that takes
    it ends, which would break the loader the loop still reads from until it stops."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
