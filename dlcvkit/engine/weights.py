"""Weight files: safetensors by default, `.pt/.pth` only through `torch.load(weights_only=True)`, no pickled models.
No file with inf/nan weights is written or read: a diverged model must never pass for a trained one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from dlcvkit.diskfull import writing
from dlcvkit.errors import DlcvkitError, first_line


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors`, `.pt`, `.pth` or `.bin` file (a `{"state_dict": ...}` or `{"model": ...}`
    wrapper is unwrapped); anything else that is not plain tensors, or inf/nan weights, is refused."""
    state = _read_tensors(Path(path))
    if (key := non_finite_key(state)) is not None:
        raise DlcvkitError(
            f"weights file {path} holds inf/nan values (first in '{key}'): it was saved from a diverged model; "
            "use weights saved before the run diverged"
        )
    return state


def non_finite_key(state: dict[str, torch.Tensor]) -> str | None:
    """The key of the first floating-point tensor holding inf/nan, or None (integer buffers cannot).

    One float32 sum per tensor and one host sync for the whole state: a sum is non-finite whenever an element
    is, and costs a tenth of `isfinite().all()` on the CPU; a sum that overflowed on finite values is then
    told apart by the exact check of that tensor alone."""
    floats = [(key, tensor) for key, tensor in state.items() if tensor.is_floating_point()]
    if not floats:
        return None
    sums_finite = torch.stack([tensor.sum(dtype=torch.float32) for _, tensor in floats]).isfinite().cpu()
    for (key, tensor), finite in zip(floats, sums_finite.tolist()):
        if not finite and not bool(tensor.isfinite().all()):
            return key
    return None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, read safely (values not checked)."""
    if not path.is_file():
        raise DlcvkitError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise DlcvkitError(f"weights file {path} is not a readable safetensors file: {e}") from None
    if path.suffix not in (".pt", ".pth", ".bin"):
        raise DlcvkitError(f"weights file {path}: expected .safetensors, .pt, .pth or .bin")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for unsafe or broken pickles
        raise DlcvkitError(
            f"weights file {path} cannot be loaded safely (weights_only=True): {first_line(e)}; "
            "save a state_dict (torch.save(model.state_dict(), ...)) or a .safetensors file"
        ) from None
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DlcvkitError(f"weights file {path} does not hold a state_dict of tensors")
    return obj


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool = True,
                 assign: bool = False) -> None:
    """`model.load_state_dict(state)` with a one-line error naming the first mismatching key and shapes.

    `assign=True` makes the file's tensors the model's parameters: for a model built on the meta device, which
    skips the random initialisation that the file overwrites anyway."""
    own = model.state_dict()
    for key, tensor in state.items():
        if key in own and own[key].shape != tensor.shape:
            raise DlcvkitError(
                f"{source} does not fit this model: '{key}' has shape {tuple(tensor.shape)} in the file and "
                f"{tuple(own[key].shape)} in the model (another architecture or class count?)"
            )
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if strict and (missing or unexpected):
        what = f"missing key '{missing[0]}'" if missing else f"unexpected key '{unexpected[0]}'"
        raise DlcvkitError(
            f"{source} does not fit this model: {what} ({len(missing)} missing, {len(unexpected)} unexpected; "
            "another architecture?)"
        )
    if assign:  # the model's own dtypes, as the copy into existing parameters would give
        state = {key: tensor.to(own[key].dtype) if key in own else tensor for key, tensor in state.items()}
    model.load_state_dict(state, strict=strict, assign=assign)


def save_weights(state: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write a state_dict as safetensors atomically (temporary file, then rename), the same tensors and metadata
    always as the same bytes; inf/nan weights are refused, and a full disk is one line (no temporary file left)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    if (key := non_finite_key(tensors)) is not None:
        raise DlcvkitError(f"refusing to write {path}: the weights hold inf/nan values (first in '{key}'); "
                           "the model diverged (lower optim.lr, set train.clip_grad_norm, or check the data)")
    data = with_sorted_metadata(save(tensors, metadata={"format": "pt", **(metadata or {})}))
    with writing(path, partial=tmp):
        with open(tmp, "wb") as f:  # `open`'s mode (644 under the usual umask), not safetensors' 600
            f.write(data)
        os.replace(tmp, path)


def with_sorted_metadata(data: bytes) -> bytes:
    """safetensors bytes whose header lists the metadata in sorted order: safetensors keeps metadata in a Rust
    HashMap, whose order changes from process to process, so that two identical runs' files differed in bytes.
    The tensors' order is safetensors' own (deterministic); the header is padded to 8 bytes as safetensors does."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    if "__metadata__" in header:
        header = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + size:]


def with_default_mode(path: str | Path) -> None:
    """Give a file the mode that `open` gives new files (0666 less the umask: usually 644): safetensors writes
    its files 600, which hides weights from the group that reads the run's other files."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
