"""What every benchmark shares: timing with warm-up and repeats, the JSON record of a measurement, speed-ups
against a reference contender, the equal-results check, and the machine the figures were taken on.

A record (one per measured contender and case) has the keys `bench`, `case`, `contender`, `samples_per_s`,
`ms_median`, `ms_min`, `ms_max` (per repeat), `repeats`, `items` (samples per repeat), `speedup_vs` and
`speedup` (the reference contender's median time per sample over this one's: > 1 is faster), `load_1min` and
the benchmark's own parameters; in the spirit of timm's `benchmark.py`.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

import torch

from dlcvkit.errors import DlcvkitError

VALID_LOAD = 0.5  # 1-minute load average above which the shared 2-core machine gives no valid figures


class ResultMismatch(DlcvkitError):
    """A contender computes something else than the reference: its timing would compare nothing."""


@dataclass
class Timing:
    """Wall-clock seconds of each timed repeat, each processing `items` samples."""

    seconds: list[float]
    items: int

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a clock read after it covers it (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], *, items: int, repeats: int, warmup: int, device: torch.device) -> Timing:
    """Time `repeats` calls of `fn` after `warmup` untimed ones, synchronising the device around each call."""
    if repeats < 1:
        raise DlcvkitError(f"--repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return Timing(seconds, items)


def measure_interleaved(fns: dict[str, Callable[[], object]], *, items: int, repeats: int, warmup: int,
                        device: torch.device) -> dict[str, Timing]:
    """`measure` for contenders compared as a ratio: their repeats alternate (A B A B ...), so that a drift of
    the machine's speed during the benchmark (other jobs, CPU frequency) reaches all of them alike."""
    if repeats < 1:
        raise DlcvkitError(f"--repeats must be at least 1, got {repeats}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            seconds[name] += measure(fn, items=items, repeats=1, warmup=0, device=device).seconds
    return {name: Timing(times, items) for name, times in seconds.items()}


def record(bench: str, case: str, contender: str, timing: Timing | None, **params) -> dict:
    """One measurement as a JSON-ready dict (`timing` None: the contender could not run; `error` says why)."""
    out = {"bench": bench, "case": case, "contender": contender}
    if timing is None:
        out |= dict.fromkeys(("samples_per_s", "ms_median", "ms_min", "ms_max", "repeats", "items"))
    else:
        out |= {
            "samples_per_s": timing.items / timing.median,
            "ms_median": 1e3 * timing.median,
            "ms_min": 1e3 * min(timing.seconds),
            "ms_max": 1e3 * max(timing.seconds),
            "repeats": len(timing.seconds),
            "items": timing.items,
        }
    return out | {"speedup_vs": None, "speedup": None, "load_1min": load_average()} | params


def add_speedups(records: list[dict], references: dict[str, str]) -> list[dict]:
    """Set `speedup_vs` / `speedup` of every record whose bench has a reference contender (`references`:
    bench -> contender), relative to that contender's record of the same case."""
    by_case = {(r["bench"], r["case"], r["contender"]): r for r in records}
    for r in records:
        reference = references.get(r["bench"])
        ref = by_case.get((r["bench"], r["case"], reference))
        if ref is None or r["ms_median"] is None or ref["ms_median"] is None:
            continue
        r["speedup_vs"] = reference
        # per sample, so contenders timed over different numbers of samples still compare
        r["speedup"] = (ref["ms_median"] / ref["items"]) / (r["ms_median"] / r["items"])
    return records


def check_equal(contender: str, reference: str, expected: torch.Tensor, actual: torch.Tensor,
                rtol: float = 0.0, atol: float = 0.0) -> None:
    """Raise ResultMismatch unless `actual` (from `contender`) equals `expected` (from `reference`)."""
    if expected.shape != actual.shape:
        raise ResultMismatch(f"{contender} gives shape {tuple(actual.shape)}, {reference} {tuple(expected.shape)}")
    if expected.dtype.is_floating_point or actual.dtype.is_floating_point:
        same = torch.allclose(actual.double(), expected.double(), rtol=rtol, atol=atol)
    else:
        same = torch.equal(actual.long(), expected.long())
    if not same:
        diff = (actual.double() - expected.double()).abs().max().item()
        raise ResultMismatch(f"{contender} disagrees with {reference} (max difference {diff:g}); not timed")


def load_average() -> float:
    """The 1-minute load average (figures taken above VALID_LOAD on this shared machine are not valid)."""
    return os.getloadavg()[0]


def set_threads(threads: int) -> int:
    """Set torch's intra-op threads explicitly (0 = one per available core) and return the number."""
    if threads < 0:
        raise DlcvkitError(f"--threads must be 0 (all cores) or more, got {threads}")
    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    return torch.get_num_threads()


def machine(device: torch.device) -> dict:
    """Machine, versions, threads and device, to print and store beside the figures."""
    versions = {"torch": torch.__version__}  # with its build tag (+cu132, +cpu)
    for package in ("torchvision", "kornia", "timm", "accelerate", "torchmetrics"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": _cpu_name(),
        "cores": len(os.sched_getaffinity(0)),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "python": platform.python_version(),
        "versions": versions,
        "load_1min_before": load_average(),
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
