"""Resumable checkpoints in RUN_DIR/checkpoints: accelerate's full state plus the engine's position, atomic.

A checkpoint is written into a temporary folder, flushed to disk, and renamed into place; the `latest` pointer
is replaced last, so a kill (or a machine crash) at any moment leaves the previous checkpoint intact and
findable, and the leftovers of an interrupted write are removed by the next one. Model weights (and the model
EMA's) are safetensors; accelerate pickles the optimizer and RNG states and reads them back with
`torch.load(weights_only=True)`, and `--resume` only reads a run's own folder.

A checkpoint restores all of its parts or stops `--resume`: a manifest (size and sha256 of every file, written
before the rename) names a missing, truncated or replaced file, and the RNG states are compared after loading,
because accelerate skips an RNG file it cannot restore with nothing but a log message.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import load as load_pickle
from torch import nn

from dlcvkit.engine.diskfull import write_atomic, writing
from dlcvkit.engine.weights import load_weights, read_state_dict, save_weights, with_default_mode
from dlcvkit.errors import DlcvkitError, first_line
from dlcvkit.runnames import CHECKPOINTS_DIR, LATEST_FILE

STATE_FILE = "trainer_state.json"
MANIFEST = "manifest.json"  # {file name: {"bytes": size, "sha256": hex digest}} of every other file
RNG_KEYS = {"random_state", "numpy_random_seed", "torch_manual_seed"}  # the generators every machine restores


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


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
    with writing(final, partial=tmp):  # on a full disk, whichever process fails removes the partial folder
        accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with writing(final, partial=tmp):
            for weights in tmp.glob("*.safetensors"):  # accelerate's, written 600 like any safetensors file
                with_default_mode(weights)
            for name, module in (extra_models or {}).items():
                save_weights(module.state_dict(), tmp / f"{name}.safetensors")
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
            (tmp / MANIFEST).write_text(json.dumps(_describe(tmp), indent=1))
            _sync_folder(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _sync_folder(root, files=False)
        _write_atomic(root / LATEST_FILE, final.name)
        _prune(root, keep_last, keep=final.name)
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint that `latest` points to, or the newest complete one, or None."""
    root = checkpoint_root(run_dir)
    pointer = root / LATEST_FILE
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
    """Restore the accelerator state (model, optimizer, RNG) and `extra_models`; return the engine state.
    A part that cannot be restored stops with one line naming its file and the previous complete checkpoint."""
    try:
        return _restore(accelerator, Path(path), extra_models or {})
    except DlcvkitError as e:
        raise DlcvkitError(f"{e}; {_older_checkpoint(Path(path))}") from None


def _restore(accelerator: Accelerator, path: Path, extra_models: dict[str, nn.Module]) -> dict:
    """Check every part that can be checked before loading it (accelerate half-loads some), then load."""
    _verify(path)
    weights = {file.stem: read_state_dict(file) for file in sorted(path.glob("*.safetensors"))}  # finite too
    rng_file = path / f"random_states_{accelerator.process_index}.pkl"
    rng = _read_rng_states(rng_file)
    try:
        accelerator.load_state(str(path))
    except Exception as e:  # noqa: BLE001 - torch, safetensors and pickle report damage and misfits in many types
        raise DlcvkitError(
            f"checkpoint {path} cannot be restored ({first_line(e)}): it does not fit this run or is damaged"
        ) from None
    _check_rng_restored(rng, rng_file)
    for name, module in extra_models.items():
        if name not in weights:
            raise DlcvkitError(f"checkpoint {path} has no {name}.safetensors; was the run trained with another recipe?")
        load_weights(module, weights[name], source=str(path / f"{name}.safetensors"))
    try:
        return json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError) as e:
        raise DlcvkitError(f"checkpoint file {path / STATE_FILE} cannot be read ({e})") from None


def _describe(folder: Path) -> dict[str, dict]:
    """Size and sha256 of every file of a checkpoint folder (the manifest itself aside)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST)
    return {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files}


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _verify(path: Path) -> None:
    """Every file of the manifest is there with its size and sha256. Checkpoints of dlcvkit versions that wrote
    no manifest are still resumed: their weights, RNG states and engine state are checked as they load, and
    the rest (the optimizer) fails loudly in torch when it is damaged."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return
    try:
        expected = {name: (int(entry["bytes"]), str(entry["sha256"]))
                    for name, entry in json.loads(manifest.read_text()).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DlcvkitError(f"checkpoint file {manifest} cannot be read ({first_line(e)})") from None
    for name, (size, sha256) in expected.items():
        file = path / name
        if not file.is_file():
            raise DlcvkitError(f"checkpoint file {file} is missing")
        if file.stat().st_size != size:
            raise DlcvkitError(f"checkpoint file {file} has {file.stat().st_size} bytes, not the {size} it was "
                               "written with (truncated or replaced)")
        if _sha256(file) != sha256:
            raise DlcvkitError(f"checkpoint file {file} changed after it was written (its sha256 differs)")


def _read_rng_states(file: Path) -> dict:
    """The RNG states of one process, read here because accelerate swallows every error of this file.
    accelerate's `load` is `torch.load(weights_only=True)` with numpy's RNG state types allowed."""
    try:
        states = load_pickle(file)
    except Exception as e:  # noqa: BLE001 - a missing, truncated or unsafe pickle raises many types
        raise DlcvkitError(f"checkpoint file {file} cannot be read ({first_line(e)})") from None
    if not isinstance(states, dict) or not RNG_KEYS <= states.keys():
        raise DlcvkitError(f"checkpoint file {file} does not hold the RNG states of a process")
    return states


def _check_rng_restored(saved: dict, file: Path) -> None:
    """The generators hold the states of `file` (CUDA's too, where both the file and this machine have them)."""
    now = {"random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
           "torch_manual_seed": torch.get_rng_state()}
    if torch.cuda.is_available() and "torch_cuda_manual_seed" in saved:
        now["torch_cuda_manual_seed"] = torch.cuda.get_rng_state_all()
    for key, state in now.items():
        if not _same(saved[key], state):
            raise DlcvkitError(f"checkpoint file {file}: its '{key}' could not be restored")


def _same(a, b) -> bool:
    """Equal RNG states: nested tuples of numbers, arrays and tensors."""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, (torch.Tensor, np.ndarray)) or isinstance(b, (torch.Tensor, np.ndarray)):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


def _older_checkpoint(path: Path) -> str:
    """How to resume from the newest complete checkpoint before `path`."""
    older = [p.name for p in sorted(path.parent.glob("step_*")) if p.name < path.name and (p / STATE_FILE).is_file()]
    if not older:
        return "there is no older complete checkpoint: train the run again"
    latest = path.parent / LATEST_FILE
    return f"to resume from the previous complete checkpoint, write its name, {older[-1]}, into {latest}"


def _write_atomic(path: Path, text: str) -> None:
    write_atomic(path, text, sync=True)
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
