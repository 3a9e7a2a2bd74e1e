"""A run saved on N processes resumes on M (issue 26, item 3): the checkpoint records N, the one line says that
the count changed, the random streams are seeded from (train.seed, step, process), and 1 -> 2, 2 -> 1 and 4 -> 2
end where an uninterrupted run does, within the tolerance of 1 vs 2 processes (tests/engine/test_distributed.py).
In this process where one process is enough; real gloo process groups in the slow tests."""

import hashlib
import json
import random
import re
import shutil

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from torch import nn

from dlcvkit.engine.checkpoint import MANIFEST, STATE_FILE, load_checkpoint, save_checkpoint
from dlcvkit.engine.loop import fit
from dlcvkit.engine.weights import read_state_dict
from tests.cli_runner import dlcvkit
from tests.engine.test_loop import _task


def _pretend_saved_on(step_dir, processes: int, record: bool = True) -> None:
    """Make a 1-process checkpoint look saved by `processes`: one RNG file per process and the count in the
    state (`record`) or, as in checkpoints of earlier versions, neither the count nor a manifest."""
    for rank in range(1, processes):
        shutil.copyfile(step_dir / "random_states_0.pkl", step_dir / f"random_states_{rank}.pkl")
    state = json.loads((step_dir / STATE_FILE).read_text())
    if record:
        state["processes"] = processes
    else:
        del state["processes"]
    (step_dir / STATE_FILE).write_text(json.dumps(state))
    if record:
        (step_dir / MANIFEST).write_text(json.dumps({
            p.name: {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
            for p in sorted(step_dir.iterdir()) if p.name != MANIFEST}))
    else:
        (step_dir / MANIFEST).unlink()


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def _saved(tmp_path):
    """A checkpoint at step 5 of a tiny model and optimizer, saved by this single process."""
    accelerator = Accelerator(cpu=True)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    model, optimizer = accelerator.prepare(model, optimizer)
    save_checkpoint(accelerator, tmp_path, {"step": 5}, keep_checkpoints=1)
    return accelerator, model, optimizer, tmp_path / "checkpoints" / "step_00000005"


def test_a_checkpoint_records_the_number_of_processes_that_saved_it(tmp_path):
    *_, step_dir = _saved(tmp_path)
    assert json.loads((step_dir / STATE_FILE).read_text()) == {"step": 5, "processes": 1}


@pytest.mark.parametrize("record", [True, False], ids=["recorded", "inferred from the RNG files"])
def test_another_count_restores_model_and_optimizer_and_seeds_from_seed_step_rank(tmp_path, record):
    accelerator, model, optimizer, step_dir = _saved(tmp_path)
    saved_weights = {k: v.clone() for k, v in model.state_dict().items()}
    saved_moments = optimizer.state_dict()["state"][0]["exp_avg"].clone()
    _pretend_saved_on(step_dir, 2, record)
    with torch.no_grad():
        model.weight.zero_()
    optimizer.state[model.weight]["exp_avg"].zero_()
    state = load_checkpoint(accelerator, step_dir, seed=7)
    assert state["processes"] == 2 and state["step"] == 5
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved_weights.items())
    assert torch.equal(optimizer.state_dict()["state"][0]["exp_avg"], saved_moments)
    drawn = _draws()
    # independent reference: NumPy's SeedSequence of (seed, step, rank), each generator seeded by hand
    expected_seed = int(np.random.SeedSequence([7, 5, 0]).generate_state(1)[0])
    random.seed(expected_seed)
    np.random.seed(expected_seed)
    torch.manual_seed(expected_seed)
    assert drawn == _draws()
    assert expected_seed != int(np.random.SeedSequence([7, 6, 0]).generate_state(1)[0])  # a new stream per step


def test_the_same_count_restores_each_process_own_rng_states(tmp_path):
    accelerator, *_ = _saved(tmp_path)
    expected = _draws()  # what the generators give right after the save
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    load_checkpoint(accelerator, tmp_path / "checkpoints" / "step_00000005", seed=7)
    assert _draws() == expected


def test_a_run_saved_on_two_processes_resumes_on_one_with_one_line_and_exactly(tmp_path, capsys):
    fit(_task(), tmp_path / "whole")
    fit(_task(), tmp_path / "split", max_steps=3)
    _pretend_saved_on(tmp_path / "split" / "checkpoints" / "step_00000003", 2)
    capsys.readouterr()
    summary = fit(_task(), tmp_path / "split", resume=True)
    err = capsys.readouterr().err
    line = ("saved on 2 processes, resumed on 1: the sample order, step count, optimizer, schedules and EMA continue "
            "exactly; each process's random stream (augmentation, dropout) is seeded anew from (train.seed=0, "
            "step=3, process)")
    assert err.count(line) == 1, err
    assert summary["step"] == 8
    whole, split = (read_state_dict(tmp_path / run / "model.safetensors") for run in ("whole", "split"))
    assert all(torch.equal(whole[key], split[key]) for key in whole)  # no RNG in this task: bit-identical
    state = json.loads((tmp_path / "split" / "checkpoints" / "step_00000008" / STATE_FILE).read_text())
    assert state["processes"] == 1  # the next checkpoint records the count it was saved on


# --- real process groups (gloo on the CPU) ---------------------------------------------------------------------

# 32 images / batch 8 = 4 micro-batches = 2 optimizer steps per epoch (grad_accum 2), 4 in all; the resume at
# step 3 is in the middle of epoch 2; warmup, decay and a model EMA must continue; no augmentation (its draws
# differ between process counts by design).
RECIPE = """
task = "classify"
[data]
img_size = 32
batch_size = 8
num_workers = 0
[model]
backbone = "test_resnet"
[aug]
preset = "none"
[train]
epochs = 2
grad_accum = 2
log_every = 1
model_ema = 0.9
[schedule]
warmup_steps = 2
"""
# measured 1 vs 2 processes in tests/engine/test_distributed.py: the same bounds hold for every N -> M here
LOSS_RTOL, WEIGHT_RTOL, WEIGHT_ATOL = 1e-4, 1e-3, 1e-4
CASES = {"2 -> 1": (2, 1), "1 -> 2": (1, 2), "4 -> 2": (4, 2)}


def _run(procs: int, *args, check: bool = True):
    if procs == 1:
        return dlcvkit(*args, check=check, timeout=600)
    return dlcvkit("launch", "--procs", procs, "--", *args, check=check, timeout=600)


@pytest.fixture(scope="module")
def process_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("process_count")
    (root / "r.toml").write_text(RECIPE)
    dlcvkit("data", "synth", "cls", "--out", root / "train", "--n", 32, "--size", 32, "--classes", 3)
    common = ["classify", "-r", root / "r.toml", "--data", root / "train"]
    _run(1, *common, "--out", root / "whole")
    resumed = {}
    for name, (saved, resumed_on) in CASES.items():
        run = root / name.replace(" -> ", "_to_")
        _run(saved, *common, "--out", run, "--max-steps", 3)
        resumed[name] = _run(resumed_on, "classify", "--resume", run).stderr
    return root, resumed


def _losses(run) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_run_saved_on_n_processes_resumed_on_m_ends_where_an_uninterrupted_one_does(process_runs, case):
    root, stderr = process_runs
    saved, resumed_on = CASES[case]
    run = root / case.replace(" -> ", "_to_")
    processes = f"{saved} process{'es' if saved > 1 else ''}"
    assert stderr[case].count(f"saved on {processes}, resumed on {resumed_on}: the sample order") == 1, stderr[case]
    assert re.search(r"from step 3 to 4", stderr[case]), stderr[case]
    whole, resumed = _losses(root / "whole"), _losses(run)
    assert [s for s, _ in resumed] == [1, 2, 3, 4]  # every step once
    assert [l for _, l in resumed] == pytest.approx([l for _, l in whole], rel=LOSS_RTOL)
    for name in ("model.safetensors", "ema.safetensors"):
        expected, got = load_file(root / "whole" / name), load_file(run / name)
        assert expected.keys() == got.keys()
        for key in expected:
            if expected[key].is_floating_point():
                torch.testing.assert_close(got[key], expected[key], rtol=WEIGHT_RTOL, atol=WEIGHT_ATOL)
            else:  # BatchNorm's step counters: the step count continued exactly
                assert torch.equal(got[key], expected[key]), key
    state = json.loads((run / "checkpoints" / "step_00000004" / STATE_FILE).read_text())
    assert state["processes"] == resumed_on and state["step"] == 4


@pytest.mark.slow
def test_a_global_batch_that_does_not_divide_by_the_new_count_is_refused_before_anything_is_written(
        process_runs, tmp_path):
    root, _ = process_runs
    run = tmp_path / "run"
    shutil.copytree(root / "1_to_2", run)  # a finished run resumes too (it has nothing left to do) unless refused
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    proc = _run(3, "classify", "--resume", run, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert errors and all("data.batch_size=8 is the global batch and must divide evenly by the 3 processes" in line
                          for line in errors), proc.stderr
    # no traceback of dlcvkit's (torchrun's launcher prints its own after any failed child)
    assert not [line for line in proc.stderr.splitlines() if line.lstrip().startswith('File "') and "/dlcvkit/" in line]
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
