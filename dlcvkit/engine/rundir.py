"""Which folder a run may write into, decided before anything is trained or written.

A new run marks its folder with RUN_MARKER before writing anything else, so that dlcvkit tells its own folders
from the user's by the marker, not by guessing from file names. A run starts in a new or empty folder; in a
folder of ours whose run stopped before its first checkpoint (a failed start), it starts again; in one that
holds a run, only with `--overwrite`. Starting again removes the names in RUN_FILES, the new run's Task's
`run_files` and those of the earlier run's Task (which its marker lists), and nothing else. A non-empty folder
without the marker is never written into: removing "our" names there could delete the user's files.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from accelerate import Accelerator

from dlcvkit.engine.checkpoint import checkpoint_root, latest_checkpoint
from dlcvkit.errors import DlcvkitError
from dlcvkit.outputs import check_writable_path
from dlcvkit.runnames import ENGINE_FILES, LOG_FILES, MODEL_FILE, RECIPE_FILE, RUN_MARKER

# The run folder this process is training into (set once it is checked): what the CLI names when a signal
# stops the process. A list, so that the CLI can clear it at the start of each command.
ACTIVE_RUN: list[Path] = []
MARKER_LISTS = "Files of its Task: "  # the marker's line naming the run's Task's `run_files`


def run_files(task_files: Iterable[str] = ()) -> tuple[str, ...]:
    """Everything a run writes into its folder besides the marker, in the order the end of a run lists them: the
    engine's files, its Task's `run_files`, then the logs and reports."""
    return (*ENGINE_FILES, *task_files, *LOG_FILES)


RUN_FILES = run_files()  # what every run may write, whatever its Task


def prepare_run_dir(accelerator: Accelerator, run_dir: Path, *, resume: bool, overwrite: bool,
                    task_files: tuple[str, ...] = ()) -> None:
    """Check RUN_DIR on every process before any of them writes; then, for a new run, the main process creates
    and marks it (listing `task_files`, its Task's), or removes an earlier run's files from it (saying so)."""
    note = check_run_dir(run_dir, resume, overwrite, task_files)
    ACTIVE_RUN[:] = [Path(run_dir)]
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and not resume:
        if note:
            print(f"dlcvkit: note: {note}", file=sys.stderr, flush=True)
        start_run_dir(run_dir, task_files)
    accelerator.wait_for_everyone()


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool = False, task_files: tuple[str, ...] = ()) -> str | None:
    """Refuse RUN_DIR unless a new run may start there (or, with `resume`, continue); writes nothing. Returns
    a note when an earlier run's files will be removed first."""
    run_dir = Path(run_dir)
    if resume:
        if overwrite:
            raise DlcvkitError(f"--resume {run_dir} continues the run; --overwrite would start it anew: pass one")
        if not (run_dir / RECIPE_FILE).is_file():
            raise DlcvkitError(f"--resume {run_dir}: not a dlcvkit run folder (no {RECIPE_FILE})")
        if latest_checkpoint(run_dir) is None:
            raise DlcvkitError(f"--resume {run_dir}: no complete checkpoint in {checkpoint_root(run_dir)}; the run "
                               f"stopped before its first one: start it again with --out {run_dir}")
        return None
    check_own_folder(run_dir, "--out", overwrite)
    if not _ours(run_dir):
        return None
    if holds_run(run_dir):
        if not overwrite:
            raise DlcvkitError(
                f"--out {run_dir} already holds a run; continue it with --resume {run_dir}, replace it with "
                "--overwrite (only dlcvkit's files are removed), or choose another --out"
            )
        return f"--overwrite: removing the run in {run_dir} (dlcvkit's files only; other files are kept)"
    if any((run_dir / name).exists() for name in {*run_files(task_files), *_marked_task_files(run_dir)}):
        return (f"--out {run_dir} holds a run that stopped before its first checkpoint: starting it again "
                "(its files are replaced, other files are kept)")
    return None


def check_series_dir(out: Path, names: Iterable[str], overwrite: bool) -> None:
    """Before runs into OUT/NAME for every name (finetune --all-settings): OUT must be new, empty or ours, and
    each run must be able to start, so that none fails after the others trained. Writes nothing."""
    check_own_folder(out, "--out", overwrite)
    if holds_run(out):
        raise DlcvkitError(f"--out {out} holds a run; a series of runs needs a folder of its own: choose another --out")
    for name in names:
        check_run_dir(Path(out) / name, resume=False, overwrite=overwrite)


def holds_run(run_dir: Path) -> bool:
    """Whether RUN_DIR holds a resumable or finished run (a checkpoint, or final weights whose checkpoints
    were deleted to save space)."""
    return latest_checkpoint(run_dir) is not None or (Path(run_dir) / MODEL_FILE).is_file()


def start_run_dir(run_dir: Path, task_files: tuple[str, ...] = ()) -> None:
    """Create and mark RUN_DIR, removing an earlier run's files (RUN_FILES, its Task's and the new Task's
    `task_files`) from it; other files stay."""
    run_dir = Path(run_dir)
    try:
        earlier = _marked_task_files(run_dir)
        mark_folder(run_dir, task_files)
        for name in dict.fromkeys((*run_files(task_files), *earlier)):
            for path in (run_dir / name, run_dir / f".{name}.tmp"):  # and save_weights' temporary file of a kill
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
    except OSError as e:
        raise DlcvkitError(f"cannot write to the run folder {run_dir} (--out): {e.strerror or e}") from None


def mark_folder(folder: Path, task_files: tuple[str, ...] = ()) -> None:
    """Create FOLDER (if new) and mark it as dlcvkit's, listing the files of its run's Task (if any)."""
    folder.mkdir(parents=True, exist_ok=True)
    listed = f"{MARKER_LISTS}{' '.join(task_files)}\n" if task_files else ""
    text = "Made by dlcvkit: a new run or --overwrite removes only dlcvkit's files.\n"
    (folder / RUN_MARKER).write_text(text + listed)


def _marked_task_files(folder: Path) -> list[str]:
    """The Task files that FOLDER's marker lists: plain names only, so that an edited marker reaches no further."""
    try:
        lines = (Path(folder) / RUN_MARKER).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    names = [n for line in lines if line.startswith(MARKER_LISTS) for n in line.removeprefix(MARKER_LISTS).split()]
    return [n for n in names if n not in (".", "..") and Path(n).name == n]


def check_own_folder(folder: Path, option: str = "--out", overwrite: bool = False) -> None:
    """Refuse FOLDER unless it is new, empty or ours, and can be written; writes nothing."""
    folder = check_writable_path(folder, option)
    if folder.exists() and not folder.is_dir():
        raise DlcvkitError(f"{option} {folder} is a file; give a folder")
    if folder.is_dir() and not _ours(folder) and any(folder.iterdir()):
        why = (f"--overwrite only replaces what dlcvkit wrote, and {folder} is not a dlcvkit folder (no {RUN_MARKER}): "
               "removing dlcvkit's file names there could delete your files" if overwrite else
               f"{option} {folder} is not empty and is not a dlcvkit folder (no {RUN_MARKER})")
        resumable = f" (to continue the run in it: --resume {folder})" if latest_checkpoint(folder) else ""
        raise DlcvkitError(f"{why}; choose a new or empty {option}{resumable}")
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        reason = "is a file" if not existing.is_dir() else "is not writable"
        raise DlcvkitError(f"cannot write to {folder} ({option}): {existing} {reason}")


def _ours(folder: Path) -> bool:
    return (folder / RUN_MARKER).is_file()
