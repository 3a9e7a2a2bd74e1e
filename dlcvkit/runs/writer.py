"""Prediction files written in a background thread, so that the device computes the next batch while the last
one is copied to the host and encoded (PNG encoding costs about as much as decoding)."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

# Batches waiting for the writer: past this the loop waits, so that a slow disk cannot fill the memory.
DEPTH = 4
# Colouring and PNG-encoding a 512 px mask costs about 15-20 ms of CPU, with the GIL released (torch, zlib): two
# threads keep up with a GPU's 100 masks/s where one would hold it back.
THREADS = 2


class BackgroundWriter:
    """A context manager running `submit`ted jobs in `threads` threads, started in order. A job's error is raised
    in the caller at a later `submit` or on leaving the block (which waits for every job), so that a failed write
    is never reported as success; an error of the block itself cancels the jobs not started."""

    def __init__(self, depth: int = DEPTH, threads: int = THREADS) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="dlcvkit-writer")
        self._pending: deque[Future] = deque()
        self._depth = depth

    def submit(self, job: Callable, *args) -> None:
        """Queue `job(*args)`; waits while `depth` jobs are queued; raises the error of a finished job."""
        while self._pending and (self._pending[0].done() or len(self._pending) >= self._depth):
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(job, *args))

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            while kind is None and self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)  # a job half done finishes its file
