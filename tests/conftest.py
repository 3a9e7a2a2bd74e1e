"""Shared test settings: one compute thread per process, so parallel subprocesses do not oversubscribe 2 cores."""

import os

import pytest
import torch
from accelerate.state import AcceleratorState

os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the CLI subprocesses the tests start
os.environ.setdefault("DLCVKIT_COLLECTIVE_TIMEOUT", "120")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """Each test starts without the Accelerator settings an earlier in-process run left behind (accelerate keeps one
    shared state per process: a bf16 run would otherwise refuse every later fp32 one)."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
