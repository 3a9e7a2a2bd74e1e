"""Resumable checkpoints in RUN_DIR/checkpoints: accelerate's full state plus the engine's position, atomic.

A checkpoint is written into a temporary folder, flushed to disk, and renamed into place; the `latest` pointer
is replaced last, so a kill (or a machine crash) at any moment leaves the previous checkpoint intact and
findable, and the leftovers of an interrupted write are removed by the next one. Model weights (and the model
EMA's) are safetensors; accelerate pickles the optimizer and RNG states and reads them back with
`torch.load(weights_only=True)`, and `--resume` only reads a run's own folder.

A checkpoint restores all of its parts or stops `--resume`: a manifest (size and sha256 of every file, written
before the rename) names a missing, truncated or replaced file, and the RNG states are compared after loading,
because accelerate skips an RNG file it cannot restore with nothing but a log message.

A checkpoint records the number of processes that saved it (checkpoints of earlier versions: one
random_states_I.pkl per process) and resumes on any number. The model, optimizer, grad scaler and EMA are the
same on every process and the data order and schedules are functions of the step, so all of them continue
exactly; only the random streams (augmentation, dropout) belong to processes. On the same count each process
gets its own back; on another count process r of the new ones seeds Python's, numpy's and torch's generators
(CPU and every GPU) with `numpy.random.SeedSequence([train.seed, step, r])`: deterministic for the new count,
and different for every process and every resume step.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import load as load_pickle
from accelerate.utils import set_seed
from torch import nn

from dlcvkit.diskfull import write_atomic, writing
from dlcvkit.engine.weights import load_weights, read_state_dict, save_weights, with_default_mode
from dlcvkit.errors import DlcvkitError, first_line
from dlcvkit.runnames import CHECKPOINTS_DIR, LATEST_FILE

STATE_FILE = "trainer_state.json"
MANIFEST = "manifest.json"  # {file name: {"bytes": size, "sha256": hex digest}} of every other file
RNG_KEYS = {"random_state", "numpy_random_seed", "torch_manual_seed"}  # the generators every machine restores
RNG_FILE = re.compile(r"random_states_(\d+)\.pkl")  # accelerate's, one per process


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: dict, keep_checkpoints: int,
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
            (tmp / STATE_FILE).write_text(json.dumps({**state, "processes": accelerator.num_processes}, indent=1))
            (tmp / MANIFEST).write_text(json.dumps(_describe(tmp), indent=1))
            _sync_folder(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _sync_folder(root, files=False)
        _write_atomic(root / LATEST_FILE, final.name)
        _prune(root, keep_checkpoints, keep=final.name)
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


def newest_complete_checkpoint(run_dir: Path) -> tuple[Path | None, list[str]]:
    """(the checkpoint to continue from, why newer ones were passed over): the one `latest` names, else the newest
    step folder, whose files all match its manifest and whose engine state reads; never a `.tmp_step_*` folder
    (a write that was killed). Reads every file of each candidate (sha256)."""
    root = checkpoint_root(run_dir)
    pointer = root / LATEST_FILE
    named = [root / pointer.read_text().strip()] if pointer.is_file() else []
    candidates = dict.fromkeys([*named, *sorted(root.glob("step_*"), reverse=True)])
    skipped = []
    for path in candidates:
        try:
            if not (path / STATE_FILE).is_file():
                raise DlcvkitError(f"it has no {STATE_FILE}")
            _verify(path)
            json.loads((path / STATE_FILE).read_text())
        except (DlcvkitError, OSError, ValueError) as e:
            skipped.append(f"{path.name} ({first_line(e)})")
            continue
        return path, skipped
    return None, skipped


def point_latest(path: Path) -> None:
    """Make `latest` name the checkpoint folder PATH (what --resume continues from)."""
    _write_atomic(path.parent / LATEST_FILE, path.name)


def kept_checkpoint(run_dir: Path) -> str:
    """For the error that stops a diverged run: which checkpoint it keeps."""
    path = latest_checkpoint(run_dir)
    return f"the last good checkpoint, {path.parent.name}/{path.name}, is kept" if path else "no checkpoint was written"


def load_checkpoint(accelerator: Accelerator, path: Path, extra_models: dict[str, nn.Module] | None = None,
                    seed: int = 0) -> dict:
    """Restore the accelerator state (model, optimizer, RNG) and `extra_models`; return the engine state, whose
    "processes" is the number of processes that saved it. Saved on another number of processes, the random
    streams are seeded from (`seed`, step, process) instead (see the module's docstring).
    A part that cannot be restored stops with one line naming its file and the previous complete checkpoint."""
    try:
        return _restore(accelerator, Path(path), extra_models or {}, seed)
    except DlcvkitError as e:
        raise DlcvkitError(f"{e}; {_older_checkpoint(Path(path))}") from None


def process_count_note(state: dict, processes: int, seed: int) -> str | None:
    """The line that says a run resumes on another number of processes than it was saved on, and what that means."""
    saved = state["processes"]
    if saved == processes:
        return None
    return (f"saved on {saved} process{'es' if saved > 1 else ''}, resumed on {processes}: the sample "
            f"order, step count, optimizer, schedules and EMA continue exactly; each process's random stream "
            f"(augmentation, dropout) is seeded anew from (train.seed={seed}, step={state['step']}, process)")


def stream_seed(seed: int, step: int, rank: int) -> int:
    """The seed of process `rank`'s generators on a resume at `step` on a new number of processes."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def _restore(accelerator: Accelerator, path: Path, extra_models: dict[str, nn.Module], seed: int) -> dict:
    """Check every part that can be checked before loading it (accelerate half-loads some), then load."""
    _verify(path)
    weights = {file.stem: read_state_dict(file) for file in sorted(path.glob("*.safetensors"))}  # finite too
    state = _read_state(path)
    same_count = state["processes"] == accelerator.num_processes
    rng_file = path / f"random_states_{accelerator.process_index}.pkl"
    rng = _read_rng_states(rng_file) if same_count else None
    try:
        accelerator.load_state(str(path))  # on another count it restores some RNG file or none: reseeded below
    except Exception as e:  # noqa: BLE001 - torch, safetensors and pickle report damage and misfits in many types
        raise DlcvkitError(
            f"checkpoint {path} cannot be restored ({first_line(e)}): it does not fit this run or is damaged"
        ) from None
    if same_count:
        _check_rng_restored(rng, rng_file)
    else:
        set_seed(stream_seed(seed, state["step"], accelerator.process_index))
    for name, module in extra_models.items():
        if name not in weights:
            raise DlcvkitError(f"checkpoint {path} has no {name}.safetensors; was the run trained with another recipe?")
        load_weights(module, weights[name], source=str(path / f"{name}.safetensors"))
    return state


def _read_state(path: Path) -> dict:
    """The engine state, with "processes" inferred from the RNG files where a checkpoint of an earlier version
    did not record it."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError) as e:
        raise DlcvkitError(f"checkpoint file {path / STATE_FILE} cannot be read ({e})") from None
    if "processes" not in state:
        ranks = sorted(int(m[1]) for f in path.iterdir() if (m := RNG_FILE.fullmatch(f.name)))
        if not ranks or ranks != list(range(len(ranks))):
            raise DlcvkitError(f"checkpoint {path} does not hold random_states_0.pkl ... random_states_N.pkl, one "
                               "for each process that saved it")
        state["processes"] = len(ranks)
    return state


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


def _prune(root: Path, keep_checkpoints: int, keep: str) -> None:
    """Keep the newest `keep_checkpoints` up to `keep` (the one just written); those after it belong to the part
    of a run that a stop lost (the run continued from an earlier one) and go too."""
    complete = sorted(p for p in root.glob("step_*") if p.is_dir() and p.name <= keep)
    stale = [p for p in root.glob("step_*") if p.is_dir() and p.name > keep]
    for old in complete[: max(0, len(complete) - max(1, keep_checkpoints))] + stale:
        shutil.rmtree(old, ignore_errors=True)
