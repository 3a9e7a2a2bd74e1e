"""A full disk while a run writes: a real file-size limit (RLIMIT_FSIZE, as `ulimit -f` sets it; Python
ignores SIGXFSZ, so a write past it fails with EFBIG) switched on just before each file a run writes. The run
stops with one line naming the file, why, and the checkpoint kept; no temporary file is left; `latest` still
names the kept checkpoint, and `--resume` from it ends bit-identical to a run that never failed."""

import errno
import resource

import pytest
import torch
import typer
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors import SafetensorError

from dlcvkit.cli import exit as cli_exit
from dlcvkit.engine import checkpoint, loop, runlog
from dlcvkit.engine.loop import fit
from dlcvkit.engine.runlog import read_metrics
from dlcvkit.engine.weights import read_state_dict
from dlcvkit.errors import DlcvkitError
from tests.engine.test_loop import ScoredLineTask, _task

EFBIG = "the file-size limit (ulimit -f) is reached (File too large)"


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def file_size_limit():
    """`set()` lowers this process's file-size limit to 0 bytes (every write fails with EFBIG) until the test ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    yield lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (0, hard))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _line_task():
    task = _task(cls=ScoredLineTask)  # 8 steps, 4 per epoch, an evaluation (and best.safetensors) per epoch
    task.recipe.train.ckpt_every, task.recipe.train.model_ema, task.recipe.train.keep_checkpoints = 2, 0.5, 10
    return task


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A run that never failed: its weights and losses."""
    AcceleratorState._reset_state(reset_partial_state=True)
    run = tmp_path_factory.mktemp("reference") / "run"
    fit(_line_task(), run)
    return read_state_dict(run / "model.safetensors"), _losses(run)


def _losses(run):
    return [(r["step"], r["loss"]) for r in read_metrics(run) if "loss" in r]


def _latest(run) -> str:
    return (run / "checkpoints" / "latest").read_text()


# stage: (module, function patched, which call fails, the file named, the checkpoint kept)
STAGES = {
    "checkpoint weights (accelerate, torch's zip writer)": (
        Accelerator, "save_state", None, "checkpoints/step_00000006", 4),
    "checkpoint model EMA": (checkpoint, "save_weights", None, "checkpoints/step_00000006", 4),
    "checkpoint manifest": (checkpoint, "_describe", None, "checkpoints/step_00000006", 4),
    "latest pointer": (checkpoint, "_write_atomic", "step_00000006", "checkpoints/latest", 4),
    "metrics.jsonl": (runlog, "append", None, "metrics.jsonl", 4),
    "summary.csv": (runlog, "write_summary_csv", None, "summary.csv", 6),
    "best.safetensors": (loop, "save_weights", "best.safetensors", "best.safetensors", 6),
    "model.safetensors": (loop, "save_weights", "model.safetensors", "model.safetensors", 8),
}


@pytest.mark.parametrize("stage", STAGES)
def test_a_full_disk_at_each_write_is_one_line_and_resume_continues_exactly(
        stage, tmp_path, monkeypatch, file_size_limit, reference):
    owner, name, only, named, kept = STAGES[stage]
    run = tmp_path / "run"
    original = getattr(owner, name)

    def limited(*args, **kwargs):
        # from the first call after step 4 (for the final files: the call writing that file)
        after_step_4 = (run / "checkpoints" / "latest").is_file() and _latest(run) >= "step_00000004"
        if after_step_4 and (only is None or any(only in str(a) for a in args)):
            file_size_limit()
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, limited)
    with pytest.raises(DlcvkitError) as failed:
        fit(_line_task(), run)
    assert str(failed.value) == (
        f"cannot write {run / named}: {EFBIG}; the last good checkpoint, checkpoints/step_{kept:08d}, is kept: "
        f"free space, then continue with --resume {run}")
    assert [p for p in run.rglob("*") if ".tmp" in p.name] == []  # no half-written file on the full disk
    assert _latest(run) == f"step_{kept:08d}"
    monkeypatch.undo()
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    fit(_line_task(), run, resume=True)
    weights, losses = reference
    resumed = read_state_dict(run / "model.safetensors")
    assert all(torch.equal(weights[k], resumed[k]) for k in weights)
    assert _losses(run) == losses  # and metrics.jsonl holds no half record


@pytest.mark.parametrize("error, line", [
    (OSError(errno.ENOSPC, "No space left on device"),
     "dlcvkit: error: cannot write a file: the disk is full (No space left on device)"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "out/a.png"),
     "dlcvkit: error: cannot write out/a.png: the disk quota is exceeded (Disk quota exceeded)"),
    (SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
     "dlcvkit: error: a file could not be written: the disk is full (No space left on device)"),
])
def test_the_cli_ends_a_full_disk_of_any_library_in_one_line(error, line, capsys):
    app = typer.Typer()

    @app.command()
    def write() -> None:
        raise error

    with pytest.raises(SystemExit) as exited:
        cli_exit.run(app, [])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines() == [line]


def test_torchs_zip_writer_past_the_file_size_limit_is_named(tmp_path, file_size_limit):
    """torch's RuntimeError ("enforce fail at inline_container.cc ... unexpected pos") carries no errno."""
    from dlcvkit.diskfull import DiskFull, writing

    file_size_limit()
    with pytest.raises(DiskFull) as failed, writing(tmp_path / "state.bin", partial=tmp_path / "state.bin"):
        torch.save({"w": torch.zeros(1000)}, tmp_path / "state.bin")
    assert str(failed.value) == f"cannot write {tmp_path / 'state.bin'}: {EFBIG}"
    assert list(tmp_path.iterdir()) == []
