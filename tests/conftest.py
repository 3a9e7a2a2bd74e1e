"""Shared test settings: one compute thread per process, so parallel subprocesses do not oversubscribe 2 cores;
small synthetic data sets built once per session and shared read-only."""

import hashlib
import inspect
import os
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState

from dlcvkit.data import synth

os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the CLI subprocesses the tests start
os.environ.setdefault("DLCVKIT_COLLECTIVE_TIMEOUT", "120")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """Each test starts without the Accelerator settings an earlier in-process run left behind (accelerate keeps one
    shared state per process: a bf16 run would otherwise refuse every later fp32 one)."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """`synth_data(kind, **options)`: the folder `dlcvkit.data.synth.synth_<kind>(folder, **options)` writes (kind:
    cls, ssl, officehome, seg), built once per session (per xdist worker) for each set of options; its name is
    `kind`.

    READ-ONLY by convention: shared by every test that asks for the same data. A test that changes data (or needs
    it under a path of its own) copies it first, `shutil.copytree(folder, tmp_path / "data")`. Enforced at the end
    of the session: a folder whose files changed fails the teardown, naming it (chmod would not stop root)."""
    built: dict[tuple, Path] = {}
    digests: dict[Path, dict[str, str]] = {}

    def get(kind: str, **options) -> Path:
        write = getattr(synth, f"synth_{kind}")
        bound = inspect.signature(write).bind(None, **options)
        bound.apply_defaults()  # synth_seg(n=4) and synth_seg(n=4, seed=0) are the same data
        key = (kind, *((k, v) for k, v in sorted(bound.arguments.items()) if k != "out"))
        if key not in built:
            folder = tmp_path_factory.mktemp("synth") / kind
            write(folder, **options)
            built[key] = folder
            digests[folder] = _digests(folder)
        return built[key]

    yield get
    changed = [str(folder) for folder, before in digests.items() if _digests(folder) != before]
    assert not changed, f"a test changed the shared synthetic data in {changed}; copy it first (tests/conftest.py)"


@pytest.fixture(scope="session")
def cls_data(synth_data):
    """P1 layout, read-only (see `synth_data`): 8 PNG images 32x32 of 2 classes, `0_0.png` ... `1_3.png`."""
    return synth_data("cls", n=8, size=32, classes=2)


@pytest.fixture(scope="session")
def seg_data(synth_data):
    """P2 layout, read-only (see `synth_data`): 4 pairs `0000_sat.jpg` + `0000_mask.png` ... of 32x32, seed 0."""
    return synth_data("seg", n=4, size=32)


@pytest.fixture(scope="session")
def office_data(synth_data):
    """Office-Home layout, read-only (see `synth_data`): 60 JPEG images 32x32 of 3 classes in train/, val/ and
    train.csv, val.csv."""
    return synth_data("officehome", n=60, size=32, classes=3)
