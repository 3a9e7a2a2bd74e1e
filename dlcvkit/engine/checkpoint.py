"""Resumable checkpoints in RUN_DIR/checkpoints: accelerate's full state plus the engine's position, atomic.

A checkpoint is written into a temporary folder, flushed to disk, and renamed into place; the `latest` pointer
is replaced last, so a kill (or a machine crash) at any moment leaves the previous checkpoint intact and
findable, and the leftovers of an interrupted write are removed by the next one. Model weights (and the model
EMA's) are safetensors; accelerate pickles the optimizer and RNG states and reads them back with
`torch.load(weights_only=True)`, and `--resume` only reads a run's own folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from accelerate import Accelerator
from torch import nn

from dlcvkit.engine.weights import load_weights, read_state_dict, save_weights
from dlcvkit.errors import DlcvkitError

STATE_FILE = "trainer_state.json"


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: dict, keep_last: int,
                    extra_models: dict[str, nn.Module] | None = None) -> Path:
    """Save the accelerator state, the engine `state` (must hold "step") and `extra_models` (weights that
    are the same on every process, e.g. the model EMA, as NAME.safetensors) as checkpoints/step_XXXXXXXX."""
    root = checkpoint_root(run_dir)
    final = root / f"step_{state['step']:08d}"
    tmp = root / f".tmp_{final.name}"
    if accelerator.is_main_process:
        for stale in root.glob(".tmp_step_*"):  # left by a write that was killed
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        for name, module in (extra_models or {}).items():
            save_weights(module.state_dict(), tmp / f"{name}.safetensors")
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        _sync_folder(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _sync_folder(root, files=False)
        _write_atomic(root / "latest", final.name)
        _prune(root, keep_last, keep=final.name)
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint that `latest` points to, or the newest complete one, or None."""
    root = checkpoint_root(run_dir)
    pointer = root / "latest"
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / STATE_FILE).is_file():
            return candidate
    complete = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file())
    return complete[-1] if complete else None


def kept_checkpoint(run_dir: Path) -> str:
    """For the error that stops a diverged run: which checkpoint it keeps."""
    path = latest_checkpoint(run_dir)
    return f"the last good checkpoint, {path.parent.name}/{path.name}, is kept" if path else "no checkpoint was written"


def load_checkpoint(accelerator: Accelerator, path: Path, extra_models: dict[str, nn.Module] | None = None) -> dict:
    """Restore the accelerator state (model, optimizer, RNG) and `extra_models`; return the engine state."""
    try:
        accelerator.load_state(str(path))
    except Exception as e:  # noqa: BLE001 - torch, safetensors and pickle report damage and misfits in many types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        older = sorted(p.name for p in path.parent.glob("step_*") if p.name < path.name)
        raise DlcvkitError(
            f"checkpoint {path} cannot be restored ({first}): it does not fit this run or is damaged"
            + (f"; to resume from an older one, write its name (e.g. {older[-1]}) into {path.parent / 'latest'}"
               if older else "")
        ) from None
    for name, module in (extra_models or {}).items():
        file = path / f"{name}.safetensors"
        if not file.is_file():
            raise DlcvkitError(f"checkpoint {path} has no {file.name}; was the run trained with another recipe?")
        load_weights(module, read_state_dict(file), source=str(file))
    return json.loads((path / STATE_FILE).read_text())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _sync_folder(path.parent, files=False)


def _sync_folder(folder: Path, files: bool = True) -> None:
    """Flush a folder's files and the folder itself (so that renames into it persist) to disk: without it a
    machine crash soon after a checkpoint can leave renamed files empty."""
    for path in [p for p in folder.iterdir() if p.is_file()] if files else []:
        _fsync(os.open(path, os.O_RDONLY))
    try:
        _fsync(os.open(folder, os.O_RDONLY))
    except OSError:  # a platform or filesystem that cannot sync folders: the files themselves are flushed
        pass


def _fsync(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(root: Path, keep_last: int, keep: str) -> None:
    complete = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in complete[: max(0, len(complete) - max(1, keep_last))]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
