"""Resumable checkpoints in RUN_DIR/checkpoints: accelerate's full state plus the engine's position, atomic.

A checkpoint is written into a temporary folder and renamed into place; the `latest` pointer is replaced
last, so a kill at any moment leaves the previous checkpoint intact and findable. Model weights are
safetensors; accelerate pickles the optimizer and RNG states, which is why `--resume` only reads a run's own
folder.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from accelerate import Accelerator

from dlcvkit.errors import DlcvkitError

STATE_FILE = "trainer_state.json"


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: dict, keep_last: int) -> Path:
    """Save the accelerator state and the engine `state` (must hold "step") as checkpoints/step_XXXXXXXX."""
    root = checkpoint_root(run_dir)
    final = root / f"step_{state['step']:08d}"
    tmp = root / f".tmp_{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
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


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict:
    """Restore the accelerator state (model, optimizer, RNG, registered objects) and return the engine state."""
    try:
        accelerator.load_state(str(path))
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0]
        raise DlcvkitError(f"checkpoint {path} does not fit this run: {first}") from None
    return json.loads((path / STATE_FILE).read_text())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _prune(root: Path, keep_last: int, keep: str) -> None:
    complete = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in complete[: max(0, len(complete) - max(1, keep_last))]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)
