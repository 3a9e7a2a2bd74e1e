"""The engine's loop in this process on a tiny fake Task: the steps of the schedule against a plain PyTorch loop,
exact resume, gradient accumulation against one batch of the same samples, and what a run prints and writes
(progress lines in a log file, summary.csv, the end-of-run summary, the threads, the files' mode)."""

import csv
import os
import re

import pytest
import torch
from accelerate.state import AcceleratorState
from torch import nn
from torch.utils.data import Dataset

from dlcvkit.config import Recipe
from dlcvkit.engine.distributed import compute_threads
from dlcvkit.engine.loop import fit
from dlcvkit.engine.runlog import end_of_run, read_metrics
from dlcvkit.engine.task import Task
from dlcvkit.engine.weights import read_state_dict

N, SLOPE = 16, torch.tensor([1.0, -2.0, 0.5, 3.0])


class Points(Dataset):
    """N fixed random points `x` (4) with targets `y = x @ SLOPE`."""

    def __init__(self) -> None:
        self.x = torch.randn(N, 4, generator=torch.Generator().manual_seed(0))
        self.y = self.x @ SLOPE

    def __len__(self) -> int:
        return N

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


class LineTask(Task):
    """Least squares with one linear layer: all a Task needs to give the loop."""

    def build_model(self) -> nn.Module:
        return nn.Linear(4, 1)

    def train_dataset(self) -> Dataset:
        return Points()

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return ((model(batch["x"]).squeeze(1) - batch["y"]) ** 2).mean()


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    AcceleratorState._reset_state(reset_partial_state=True)  # every fit makes its own Accelerator
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


class ScoredLineTask(LineTask):
    """LineTask with a validation set (the training points) scored by the negative mean squared error."""

    best_metric = "neg_mse"

    def val_dataset(self) -> Dataset:
        return Points()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches, ctx) -> dict:
        errors = torch.cat([(model(b["x"]).squeeze(1) - b["y"]) ** 2 for b in batches])
        return {"neg_mse": -float(errors.mean())}


def _task(batch_size: int = 4, grad_accum: int = 1, cls: type[LineTask] = LineTask) -> LineTask:
    recipe = Recipe(task="line")
    recipe.data.batch_size, recipe.data.num_workers = batch_size, 0
    recipe.optim.name, recipe.optim.lr, recipe.optim.weight_decay = "sgd", 0.05, 0.0  # timm: Nesterov momentum 0.9
    recipe.schedule.decay = "constant"
    t = recipe.train
    t.epochs, t.grad_accum, t.log_every, t.tensorboard, t.keep_checkpoints = 2, grad_accum, 1, False, 1
    return cls(recipe)


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return read_state_dict(run_dir / "model.safetensors")


def _plain_loop(steps: int) -> dict[str, torch.Tensor]:
    """The same training written out in PyTorch: seeded init, epoch e visits randperm(N) seeded e in batches of 4."""
    data = Points()
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    for step in range(steps):
        epoch, b = divmod(step, N // 4)
        order = torch.randperm(N, generator=torch.Generator().manual_seed(epoch))[4 * b: 4 * b + 4]
        loss = ((model(data.x[order]).squeeze(1) - data.y[order]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.state_dict()


def test_fit_runs_the_schedule_as_a_plain_loop_would(tmp_path):
    summary = fit(_task(), tmp_path / "run")
    assert summary["step"] == 2 * N // 4
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == list(range(1, 9))
    expected = _plain_loop(8)
    for key, value in _weights(tmp_path / "run").items():
        torch.testing.assert_close(value, expected[key].detach())


def test_resume_in_the_middle_of_an_epoch_ends_bit_identical(tmp_path):
    fit(_task(), tmp_path / "whole")
    fit(_task(), tmp_path / "split", max_steps=3)
    summary = fit(_task(), tmp_path / "split", resume=True)
    assert summary["step"] == 8
    whole, split = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    assert all(torch.equal(whole[key], split[key]) for key in whole)


def test_two_accumulated_half_batches_make_the_step_of_the_whole_batch(tmp_path):
    fit(_task(batch_size=2, grad_accum=2), tmp_path / "accumulated", max_steps=1)
    fit(_task(batch_size=4), tmp_path / "whole", max_steps=1)
    accumulated, whole = _weights(tmp_path / "accumulated"), _weights(tmp_path / "whole")
    assert not torch.equal(whole["weight"], _plain_loop(0)["weight"])  # the step moved the weights
    for key, value in whole.items():
        torch.testing.assert_close(accumulated[key], value)


PROGRESS = re.compile(r"^step (\d+)/8 \(\d+%\)  epoch (\d)  loss (\S+)  lr 5\.00e-02  [\d.]+ img/s  "
                      r"elapsed \d:\d\d:\d\d  ETA \d:\d\d:\d\d$")


def _progress_lines(stderr: str) -> list[tuple[int, int, str]]:
    return [tuple(m.groups()) for line in stderr.splitlines() if (m := PROGRESS.match(line))]


def test_a_run_into_a_log_file_prints_plain_progress_lines(tmp_path, capsys):
    task = _task()
    task.recipe.train.progress_seconds = 0  # a line at every logged step
    fit(task, tmp_path / "run")
    lines = _progress_lines(capsys.readouterr().err)
    records = read_metrics(tmp_path / "run")
    assert lines == [(str(r["step"]), str(r["epoch"]), f"{r['loss']:.4f}") for r in records]
    assert len(lines) == 8


def test_progress_lines_are_spaced_in_time_but_the_last_step_always_prints(tmp_path, capsys):
    task = _task()
    task.recipe.train.progress_seconds = 3600
    fit(task, tmp_path / "run")
    assert [int(step) for step, _, _ in _progress_lines(capsys.readouterr().err)] == [1, 8]


@pytest.mark.parametrize("batch_size, grad_accum, warning", [
    (6, 1, "warning: data.train: 16 samples at batch 6: 4 dropped per epoch"),
    (3, 2, "warning: data.train: 16 samples at batch 3 x train.grad_accum 2: 4 dropped per epoch"),
    (4, 1, None),
])
def test_an_epoch_that_drops_samples_says_how_many(tmp_path, capsys, batch_size, grad_accum, warning):
    fit(_task(batch_size, grad_accum), tmp_path / "run", max_steps=1)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert [w.split(" (")[0] for w in warnings] == ([warning] if warning else [])


def test_summary_csv_and_the_end_of_run_name_the_best_metric(tmp_path):
    summary = fit(_task(cls=ScoredLineTask), tmp_path / "run")
    records = read_metrics(tmp_path / "run")
    val = [r for r in records if r.get("split") == "val"]
    with open(tmp_path / "run" / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(int(r["step"]), int(r["epoch"]), float(r["neg_mse"])) for r in rows] == \
        [(r["step"], r["epoch"], r["neg_mse"]) for r in val]
    losses = {r["step"]: r["loss"] for r in records if "split" not in r}
    assert [float(r["train_loss"]) for r in rows] == [losses[r["step"]] for r in val]
    best = max(val, key=lambda r: r["neg_mse"])
    lines = end_of_run(summary, tmp_path / "run")
    assert lines[0].startswith("done: 8 steps, epoch 2 of 2, in 0:00:")
    assert lines[1] == f"final (step 8): neg_mse {val[-1]['neg_mse']:.4f}"
    assert lines[2] == (f"best neg_mse {best['neg_mse']:.4f} at epoch {best['epoch']} (step {best['step']}): "
                        f"{tmp_path / 'run' / 'best.safetensors'}")
    assert lines[3] == (f"files in {tmp_path / 'run'}: recipe.toml, metrics.jsonl, checkpoints/, model.safetensors, "
                        "best.safetensors, summary.csv")


def test_a_run_cut_by_max_steps_says_steps_run_of_planned(tmp_path):
    from dlcvkit.report import run_report_blocks

    summary = fit(_task(cls=ScoredLineTask), tmp_path / "run", max_steps=3)
    assert end_of_run(summary, tmp_path / "run")[0].startswith("stopped early (--max-steps): 3 of 8 steps, epoch 0 of 2")
    facts = dict(next(b for b in run_report_blocks(tmp_path / "run") if b.kind == "table").rows)
    assert facts["optimizer steps"] == "3 of 8 planned (stopped early: --max-steps)"
    assert facts["epochs"] == "0.75 of 2"
    assert facts["best validation neg_mse"].endswith("(epoch 0, step 3: best.safetensors)")


def test_weights_files_get_the_mode_of_the_runs_other_files(tmp_path):
    old = os.umask(0o027)
    try:
        fit(_task(), tmp_path / "run", max_steps=1)
    finally:
        os.umask(old)
    run = tmp_path / "run"
    weights = [run / "model.safetensors", *run.glob("checkpoints/step_*/*.safetensors")]
    assert len(weights) == 2
    assert {p.stat().st_mode & 0o777 for p in [*weights, run / "metrics.jsonl"]} == {0o640}


def test_threads_default_to_the_cores_of_this_process_shared_by_the_nodes_processes(monkeypatch, tmp_path):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert compute_threads(0) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert compute_threads(0) == 3
    assert compute_threads(5) == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # accelerate launch's split of the cores
    assert compute_threads(0) == 2
    task = _task()
    task.recipe.train.threads = 2
    try:
        fit(task, tmp_path / "run", max_steps=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
