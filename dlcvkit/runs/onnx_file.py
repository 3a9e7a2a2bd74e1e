"""An exported ONNX model file, checked before `--onnx` runs it: the sha256 that `dlcvkit export` writes beside it
(`model.onnx.sha256`, in `sha256sum`'s format, so `sha256sum -c model.onnx.sha256` checks it too), and the
finiteness of the weights it holds, for files with no checksum (exported by hand or by an earlier dlcvkit).

A damaged byte in a weight often leaves a graph that loads and runs, and gives wrong masks: only these checks
tell it from a sound model.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from dlcvkit.errors import DlcvkitError, first_line

SUFFIX = ".sha256"
AGAIN = "export the model again with `dlcvkit export`"


def checksum_file(model: Path) -> Path:
    """Where the checksum of `model` is: beside it, its name plus `.sha256`."""
    return model.with_name(model.name + SUFFIX)


def write_checksum(model: Path, data: bytes) -> None:
    """Write the checksum of `data`, the bytes about to be written to `model` (atomically, as the model is)."""
    path = checksum_file(model)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{hashlib.sha256(data).hexdigest()}  {model.name}\n", encoding="ascii")
    os.replace(tmp, path)


def verify_checksum(model: Path, data: bytes) -> bool:
    """Whether `data`, the bytes of `model`, were verified against the checksum beside it: True if they match,
    False if there is no checksum file; an error if they differ or the checksum file is damaged."""
    path = checksum_file(model)
    if not path.exists():
        return False
    try:
        found = re.match(rb"([0-9a-fA-F]{64})(\s|$)", path.read_bytes())
    except OSError as e:
        raise DlcvkitError(f"--onnx {model}: its checksum file {path} cannot be read ({e.strerror or e}); {AGAIN}") \
            from None
    if found is None:
        raise DlcvkitError(f"--onnx {model}: its checksum file {path} is damaged (no sha256 in it); {AGAIN}")
    if hashlib.sha256(data).hexdigest() != found[1].decode().lower():
        raise DlcvkitError(f"--onnx {model} does not match its checksum in {path}: one of them was damaged or "
                           f"changed after the export; {AGAIN}")
    return True


def check_finite_weights(model: Path, proto) -> None:
    """Refuse a model with an inf/nan weight: its initializers (external data included, read from beside the
    model) and constant tensors. Subgraphs are not searched: `dlcvkit export` writes none."""
    from onnx import numpy_helper

    tensors = [*proto.graph.initializer, *(attribute.t for node in proto.graph.node
                                           for attribute in node.attribute if attribute.HasField("t"))]
    for tensor in tensors:
        try:
            values = numpy_helper.to_array(tensor, base_dir=str(model.parent))
        except Exception as e:  # noqa: BLE001 - onnx raises several types for missing or short external data
            raise DlcvkitError(f"--onnx {model}: weight '{tensor.name}' cannot be read ({first_line(e)}); {AGAIN}") \
                from None
        if _non_finite(values):
            raise DlcvkitError(f"--onnx {model} holds inf/nan weights (first in '{tensor.name}'): the file is "
                               f"damaged; {AGAIN}")


def _non_finite(values: np.ndarray) -> bool:
    """Whether a floating-point array holds inf/nan. A float64 sum is non-finite whenever an element is and
    allocates nothing (float32 weights cannot overflow it); only then is every element checked."""
    if values.dtype.kind == "V":  # bfloat16 and float8 (ml_dtypes' types)
        values = values.astype(np.float32)
    elif values.dtype.kind != "f":  # integers, bools, strings
        return False
    return not np.isfinite(values.sum(dtype=np.float64)) and not bool(np.isfinite(values).all())
