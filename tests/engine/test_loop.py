"""The engine's loop in this process on a tiny fake Task: the steps of the schedule against a plain PyTorch loop,
exact resume, and gradient accumulation against one batch of the same samples."""

import pytest
import torch
from accelerate.state import AcceleratorState
from torch import nn
from torch.utils.data import Dataset

from dlcvkit.config import Recipe
from dlcvkit.engine.loop import fit
from dlcvkit.engine.runlog import read_metrics
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


def _task(batch_size: int = 4, grad_accum: int = 1) -> LineTask:
    recipe = Recipe(task="line")
    recipe.data.batch_size, recipe.data.num_workers = batch_size, 0
    recipe.optim.name, recipe.optim.lr, recipe.optim.weight_decay = "sgd", 0.05, 0.0  # timm: Nesterov momentum 0.9
    recipe.schedule.decay = "constant"
    t = recipe.train
    t.epochs, t.grad_accum, t.log_every, t.tensorboard, t.keep_last = 2, grad_accum, 1, False, 1
    return LineTask(recipe)


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
