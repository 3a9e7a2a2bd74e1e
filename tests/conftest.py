"""Shared test settings: one compute thread per process, so parallel subprocesses do not oversubscribe 2 cores."""

import os

import torch

os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the CLI subprocesses the tests start
os.environ.setdefault("DLCVKIT_COLLECTIVE_TIMEOUT", "120")
torch.set_num_threads(1)
