"""How the command line ends: one line on stderr, naming the process in a multi-process run, and the exit code
(2 bad input or memory that ran out, 1 a lost peer, 128 + the signal's number for Ctrl-C, SIGTERM and SIGUSR1:
130, 143, 138 on Linux, after a checkpoint when they stop training); a process group torn down on the way out."""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
from pathlib import Path

from dlcvkit.diskfull import no_room
from dlcvkit.engine.interrupt import TrainingInterrupted
from dlcvkit.errors import DlcvkitError


def _pop_debug(args: list[str]) -> bool:
    """Remove every `--debug` before a `--` separator; True if there was one (or DLCVKIT_DEBUG=1)."""
    end = args.index("--") if "--" in args else len(args)
    found = "--debug" in args[:end]
    args[:end] = [a for a in args[:end] if a != "--debug"]
    return found or os.environ.get("DLCVKIT_DEBUG", "") not in ("", "0")


class _Terminated(BaseException):
    """SIGTERM or SIGUSR1 outside training, as an exception so that the CLI can say why it stops (BaseException: no
    `except Exception` turns it into something else)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum, frame) -> None:
    raise _Terminated(signum)


TERMINATING = (signal.SIGTERM, signal.SIGUSR1)  # the scheduler's (SIGUSR1's default action would end us silently)


def run(app, argv: list[str]) -> None:
    """Run the Typer `app` on `argv`; exit 2 with one line on stderr for bad input."""
    args = list(argv)
    debug = _pop_debug(args)
    in_main_thread = threading.current_thread() is threading.main_thread()  # where signal handlers live
    previous = {s: signal.signal(s, _terminate) for s in TERMINATING} if in_main_thread else {}
    if "dlcvkit.engine.rundir" in sys.modules:  # a run of an earlier command in this process is not this one's
        sys.modules["dlcvkit.engine.rundir"].ACTIVE_RUN.clear()
    try:
        app(args=args, prog_name="dlcvkit")  # standalone: Typer itself reports usage errors (exit 2)
    except DlcvkitError as e:
        if debug:
            raise
        _exit(2, f"error: {_message(e)}")
    except TrainingInterrupted as e:  # the processes stopped together, after saving
        _exit(e.code, str(e), every_process=False, abort=False)
    except KeyboardInterrupt:
        _exit(130, "interrupted")
    except SystemExit as e:
        if e.code != 130:
            raise
        _exit(130, "interrupted")  # Typer's exit for a Ctrl-C outside training (or a second one during it)
    except _Terminated as e:
        why = " (a launcher stops every process when one fails: see the first error above)" if _processes()[1] > 1 \
            else _what_is_kept()
        _exit(128 + e.signum, f"stopped by {signal.Signals(e.signum).name}{why}")
    except OSError as e:  # a path that cannot be read or written (permissions, a file where a folder goes)
        if not debug and (why := no_room(e, Path.cwd())):  # a full disk where no command named the file
            _exit(2, f"error: cannot write {e.filename or 'a file'}: {why}")
        if debug or e.filename is None:
            _abort_process_group()
            raise
        paths = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
        _exit(2, f"error: {paths}: {e.strerror or e}; check the path and its permissions")
    except Exception as e:
        if not debug and (memory := _out_of_memory(e)):
            _exit(2, f"error: {memory}")
        if not debug and (why := no_room(e, Path.cwd())):  # a full disk in a library's own error type
            _exit(2, f"error: a file could not be written: {why}")
        if debug or not _lost_peer(e):
            _abort_process_group()
            raise
        _exit(1, f"error: a collective operation failed ({_first_line(e)}): another process of the run failed or "
                 "is unreachable; its error is the cause")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _what_is_kept() -> str:
    """What a stopped training run leaves (looked up in its folder), or "" outside training."""
    rundir = sys.modules.get("dlcvkit.engine.rundir")
    if rundir is None or not rundir.ACTIVE_RUN:
        return ""
    from dlcvkit.engine.checkpoint import kept_checkpoint, latest_checkpoint

    run_dir = rundir.ACTIVE_RUN[0]
    then = f": continue with --resume {run_dir}" if latest_checkpoint(run_dir) else f" in {run_dir}: start it " \
        f"again with --out {run_dir}"
    return f"; {kept_checkpoint(run_dir)}{then}"


def _message(error: DlcvkitError) -> str:
    """The error's message; raised in a DataLoader worker, it arrives wrapped in the worker's traceback, whose
    last line holds the original message."""
    text = str(error).strip()
    marker = f"{DlcvkitError.__module__}.{DlcvkitError.__name__}: "
    return text.rsplit(marker, 1)[-1] if text.startswith("Caught ") and marker in text else text


def _processes() -> tuple[int, int]:
    """(this process's rank, number of processes), from the launcher's environment."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _out_of_memory(error: Exception) -> str:
    """For an allocation that failed (torch's CUDA or CPU allocator, Python's MemoryError): what ran out and what
    to lower; else ""."""
    text = str(error)
    gpu = type(error).__name__ == "OutOfMemoryError" or "CUDA out of memory" in text
    if not (gpu or isinstance(error, MemoryError) or "DefaultCPUAllocator" in text):
        return ""
    size = re.search(r"[Tt]ried to allocate ([\d.]+ ?\w+)", text)
    tried = f" (an allocation of {size[1]} failed)" if size else ""
    return (f"out of {'GPU' if gpu else 'CPU'} memory{tried}; lower data.batch_size or data.img_size (--set KEY=VALUE; "
            "--batch-size of eval and predict, --tile of predict seg); the files written so far are kept")


def _lost_peer(error: Exception) -> bool:
    """Whether `error` is a collective of a multi-process run failing because a peer died or timed out."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or _processes()[1] < 2:
        return False
    return isinstance(error, dist.DistError) or (isinstance(error, RuntimeError) and bool(
        re.search(r"gloo|NCCL|Connection (closed|reset) by peer", str(error))))


def _first_line(error: Exception) -> str:
    """The first sentence of a message, without a C++ source location ("[/path/pair.cc:561] ...")."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.split(r"(?<=\.)\s", re.sub(r"^\[[^\]]*:\d+\]\s*", "", text), maxsplit=1)[0].rstrip(".")


def _abort_process_group() -> None:
    """Tear down this process's communicators without waiting for its peers, so that leaving after an error
    cannot block on a collective they will never complete (torch's abort is experimental and NCCL-only;
    gloo connections close with the process anyway)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return
    try:
        dist.distributed_c10d._abort_process_group()
    except Exception:  # noqa: BLE001 - best effort on the way out; the launcher stops the others regardless
        pass


def _exit(code: int, message: str, every_process: bool = True, abort: bool = True) -> None:
    """Print `dlcvkit: MESSAGE` (naming the process in a multi-process run) and exit with `code`."""
    rank, world = _processes()
    if every_process or rank == 0:
        where = f"[process {rank} of {world}] " if world > 1 else ""
        print(f"dlcvkit: {where}{message}", file=sys.stderr, flush=True)
    if abort:
        _abort_process_group()
    sys.exit(code)
