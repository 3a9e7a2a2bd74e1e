"""What the CLI's last line says when a run is stopped from outside: SIGTERM names the checkpoint that is really
in the run folder (or that none was written)."""

import os
import signal

import pytest

from dlcvkit.cli import exit as cli_exit
from dlcvkit.engine import loop
from dlcvkit.engine.loop import fit
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


@pytest.mark.parametrize("saves_before", [0, 2])
def test_sigterm_names_the_checkpoint_in_the_run_folder(tmp_path, capsys, monkeypatch, saves_before):
    run_dir = tmp_path / "run"
    task = _task()
    task.recipe.train.ckpt_every, task.recipe.train.keep_last = 1, 3
    _sigterm_at_save(monkeypatch, saves_before)
    code = _run(_finish(lambda: fit(task, run_dir)))
    expected = (f"no checkpoint was written in {run_dir}: start it again with --out {run_dir}" if saves_before == 0
                else f"the last good checkpoint, checkpoints/step_00000002, is kept: continue with --resume {run_dir}")
    assert code == 143 and capsys.readouterr().err.splitlines()[-1] == f"dlcvkit: stopped by SIGTERM; {expected}"


def test_sigterm_outside_training_names_no_earlier_run(tmp_path, capsys):
    assert _run(_finish(lambda: fit(_task(), tmp_path / "run"))) == 0
    capsys.readouterr()
    assert _run(_finish(lambda: os.kill(os.getpid(), signal.SIGTERM))) == 143 and capsys.readouterr().err.splitlines() == ["dlcvkit: stopped by SIGTERM"]
