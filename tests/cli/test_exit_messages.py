"""What the CLI's last line says when a run stops: SIGTERM names the checkpoint that is really in the run folder
(or that none was written); memory that runs out names what to lower, and sizes that no memory holds are refused
before the run folder exists."""

import os
import signal
from pathlib import Path

import pytest
import torch

from dlcvkit.cli import exit as cli_exit
from dlcvkit.engine import loop
from dlcvkit.engine.loop import fit
from tests.cli_runner import dlcvkit_here
from tests.engine.test_loop import _task


def _run(app) -> int:
    """The exit code of `app` run as the CLI runs its Typer app."""
    with pytest.raises(SystemExit) as exited:
        cli_exit.run(app, [])
    return exited.value.code


def _finish(app):
    """`app` ending as a Typer app does after success."""
    def run(args, prog_name):
        app()
        raise SystemExit(0)

    return run


def _sigterm_at_save(monkeypatch, saves_before: int) -> None:
    """SIGTERM this process when the loop saves its checkpoint number `saves_before` + 1 (0 = the first)."""
    save, calls = loop.save_checkpoint, []

    def saving(*args, **kwargs):
        if len(calls) == saves_before:
            os.kill(os.getpid(), signal.SIGTERM)
        calls.append(1)
        return save(*args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", saving)


@pytest.mark.parametrize("saves_before, stopped", [(0, 2), (2, 4)])
def test_sigterm_names_the_checkpoint_in_the_run_folder(tmp_path, capsys, monkeypatch, saves_before, stopped):
    """A SIGTERM during a checkpoint's write (after step `saves_before` + 1) stops the run after the next step, with
    that step's checkpoint saved (issue 26: SIGTERM used to stop at once, without one)."""
    run_dir = tmp_path / "run"
    task = _task()
    task.recipe.train.ckpt_every, task.recipe.train.keep_checkpoints = 1, 3
    _sigterm_at_save(monkeypatch, saves_before)
    code = _run(_finish(lambda: fit(task, run_dir)))
    assert code == 143 and capsys.readouterr().err.splitlines()[-1] == (
        f"dlcvkit: stopped after step {stopped} of 8 by SIGTERM; the checkpoint is saved: continue with --resume "
        f"{run_dir} (or the same command with --resume auto)")
    assert (run_dir / "checkpoints" / "latest").read_text() == f"step_{stopped:08d}"


def test_sigterm_outside_training_names_no_earlier_run(tmp_path, capsys):
    assert _run(_finish(lambda: fit(_task(), tmp_path / "run"))) == 0
    capsys.readouterr()
    assert _run(_finish(lambda: os.kill(os.getpid(), signal.SIGTERM))) == 143 and capsys.readouterr().err.splitlines() == ["dlcvkit: stopped by SIGTERM"]


# (command, shipped recipe, key=value): values that size memory, far past any real run, refused when the recipe
# loads; the bounds are those of dlcvkit.config.RANGES
ABSURD = [
    ("classify", "demo_cls", "data.img_size=1000000", "'data.img_size' must be between 1 and 8192, got 1000000"),
    ("classify", "demo_cls", "data.batch_size=100000000", "'data.batch_size' must be between 1 and 65536, got 100000000"),
    ("classify", "demo_cls", "model.head=[512, 100000000]", "'model.head[1]' must be between 1 and 65536, got 100000000"),
    ("classify", "demo_cls", "model.grid=1000", "'model.grid' must be between 1 and 64, got 1000"),
    ("segment", "demo_seg", "data.img_size=1000000", "'data.img_size' must be between 1 and 8192, got 1000000"),
    ("segment", "demo_seg", "data.eval_batch_size=1000000", "'data.eval_batch_size' must be between 0 and 65536, got 1000000"),
    ("segment", "demo_seg", "model.fcn_width=10000000", "'model.fcn_width' must be between 1 and 65536, got 10000000"),
    ("byol", "demo_byol", "data.img_size=1000000", "'data.img_size' must be between 1 and 8192, got 1000000"),
    ("byol", "demo_byol", "data.num_workers=100000", "'data.num_workers' must be between 0 and 256, got 100000"),
    ("byol", "demo_byol", "model.projection_hidden=10000000", "'model.projection_hidden' must be between 1 and 65536, got 10000000"),
    ("finetune", "demo_finetune", "data.img_size=1000000", "'data.img_size' must be between 1 and 8192, got 1000000"),
    ("finetune", "demo_finetune", "model.input_size=100000", "'model.input_size' must be between 1 and 8192, got 100000"),
]


@pytest.mark.parametrize("command, recipe, override, expected", ABSURD)
def test_absurd_sizes_are_refused_before_the_run_folder_exists(tmp_path, capsys, command, recipe, override, expected):
    from dlcvkit.recipes import find

    code, _, err = dlcvkit_here(capsys, command, "-r", recipe, "--data", tmp_path / "data", "--out", tmp_path / "run",
                                "--set", override)
    assert code == 2
    assert err.splitlines() == [f"dlcvkit: error: {find(Path(recipe))} with --set: recipe key {expected}"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("error, expected", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                  "tried to allocate 10000000000000 bytes. Error code 12 (Cannot allocate memory)"),
     "out of CPU memory (an allocation of 10000000000000 bytes failed)"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.1 GiB"),
     "out of GPU memory (an allocation of 2.00 GiB failed)"),
    (MemoryError(), "out of CPU memory"),
])
def test_memory_that_runs_out_mid_run_ends_in_one_line_keeping_the_checkpoints(tmp_path, capsys, monkeypatch, error,
                                                                               expected):
    task = _task()
    task.recipe.train.ckpt_every = 1
    loss, steps = task.loss, []

    def failing(model, batch):
        steps.append(1)
        if len(steps) == 3:
            raise error
        return loss(model, batch)

    monkeypatch.setattr(task, "loss", failing)
    assert _run(_finish(lambda: fit(task, tmp_path / "run"))) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"dlcvkit: error: {expected}; lower data.batch_size or data.img_size (--set KEY=VALUE; --batch-size of eval "
        "and predict, --tile of predict seg); the files written so far are kept")
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_00000002"


@pytest.mark.parametrize("options, expected", [
    ({"batch_size": 10**8}, "--batch-size 100000000: must be between 0 and 65536 (as data.eval_batch_size)"),
    ({"batch_size": -2}, "--batch-size -2: must be between 0 and 65536 (as data.eval_batch_size)"),
    ({"num_workers": 10**5}, "--workers 100000: must be between -1 and 256 (as data.num_workers)"),
])
def test_inference_batch_and_workers_are_bounded_as_the_recipe_keys_they_set(options, expected):
    from dlcvkit.config import DataConfig
    from dlcvkit.errors import DlcvkitError
    from dlcvkit.runs.load import eval_data

    with pytest.raises(DlcvkitError) as error:
        eval_data(DataConfig(), **options)
    assert str(error.value) == expected
    assert eval_data(DataConfig(), 65536, 256).eval_batch_size == 65536  # the bounds themselves are allowed
