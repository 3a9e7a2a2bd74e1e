"""Stop signals and `--resume auto` (issue 26: 1, 2, 6), in this process: a real SIGTERM / SIGUSR1 / Ctrl-C sent
by the process to itself right after a chosen step saves a checkpoint at that step and exits 128 + the signal's
number; the same command line with `--resume auto` then ends bit-identical to an uninterrupted run, every step
logged once. Real signals to real processes (1 and 2 of them, through the launcher) are in
tests/engine/test_stop_signals_processes.py."""

import json
import os
import shutil
import signal
import stat

import pytest
import torch
from safetensors.torch import load_file

from dlcvkit.cli import main
from dlcvkit.config import load_recipe
from dlcvkit.data.synth import synth_cls
from dlcvkit.engine import runlog
from dlcvkit.engine.checkpoint import newest_complete_checkpoint
from dlcvkit.runs.training import auto_resume
from dlcvkit.tasks.classify import ClassifyRecipe
from tests.cli_runner import dlcvkit_here

# 24 images / batch 4 = 6 steps per epoch, 12 in all; an evaluation each epoch (summary.csv), a checkpoint every
# 2 steps, a model EMA and augmentation: the resume must restore all of them.
RECIPE = """
task = "classify"
[data]
img_size = 16
batch_size = 4
num_workers = 0
[model]
backbone = "test_resnet"
[train]
epochs = 2
log_every = 1
ckpt_every = 2
keep_checkpoints = 3
model_ema = 0.9
tensorboard = false
"""
TOTAL = 12


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stop")
    (root / "recipe.toml").write_text(RECIPE)
    synth_cls(root / "train", n=24, size=16, classes=3)
    synth_cls(root / "val", n=6, size=16, classes=3, seed=1)
    return root


def _command(root, run, *extra):
    return ["classify", "-r", root / "recipe.toml", "--data", root / "train", "--val", root / "val", "--out", run,
            "--resume", "auto", *extra]


@pytest.fixture(scope="module")
def reference(data):
    """The uninterrupted run (started by `--resume auto` on a folder that does not exist)."""
    run = data / "reference"
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in _command(data, run)])
    assert done.value.code in (0, None)
    return run


def _signal_after(monkeypatch, signum, step):
    """Send `signum` to this process right after optimizer step `step` (as a scheduler or a terminal would)."""
    train_step = runlog.RunLog.train_step

    def then_signal(self, done, *args, **kwargs):
        train_step(self, done, *args, **kwargs)
        if done == step:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(runlog.RunLog, "train_step", then_signal)


def _same_weights(a, b):
    for name in ("model.safetensors", "ema.safetensors"):
        x, y = load_file(a / name), load_file(b / name)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), f"{b}/{name} differs"


def _steps(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in records if "loss" in r and "split" not in r]


def _checkpoints(run):
    return sorted(p.name for p in (run / "checkpoints").iterdir() if p.name != "latest")


@pytest.mark.parametrize("signum, stop_at", [(signal.SIGTERM, 3), pytest.param(signal.SIGUSR1, 8, marks=pytest.mark.slow),
                                             pytest.param(signal.SIGINT, 5, marks=pytest.mark.slow)])
def test_a_stop_signal_saves_that_step_and_resume_auto_ends_bit_identical(data, reference, capsys, monkeypatch,
                                                                         signum, stop_at):
    run = data / f"stopped_{signum.name}"
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    _signal_after(monkeypatch, signum, stop_at)
    code, _, err = dlcvkit_here(capsys, *_command(data, run))
    assert code == 128 + signum, err
    assert f"dlcvkit: --resume auto: no checkpoint in {run}: starting a new run there" in err
    name = {signal.SIGINT: "Ctrl-C"}.get(signum, signum.name)
    assert err.strip().splitlines()[-1] == (
        f"dlcvkit: stopped after step {stop_at} of {TOTAL} by {name}; the checkpoint is saved: continue with "
        f"--resume {run} (or the same command with --resume auto)")
    assert (run / "checkpoints" / "latest").read_text() == f"step_{stop_at:08d}"  # the step it was in, not a later one
    assert not (run / "model.safetensors").exists()
    assert max(_steps(run)) == stop_at

    monkeypatch.undo()
    code, _, err = dlcvkit_here(capsys, *_command(data, run))
    assert code == 0, err
    assert (f"dlcvkit: --resume auto: continuing the run in {run} from checkpoints/step_{stop_at:08d} "
            f"(step {stop_at} of {TOTAL})") in err
    _same_weights(reference, run)
    assert _steps(run) == list(range(1, TOTAL + 1)) == _steps(reference)  # every step once
    summary = (run / "summary.csv").read_text()
    assert [row.split(",")[0] for row in summary.splitlines()] == ["step", "6", "12"]  # each evaluation once
    assert summary == (reference / "summary.csv").read_text()
    assert _checkpoints(run) == ["step_00000008", "step_00000010", "step_00000012"]  # train.keep_checkpoints = 3


def _fake_scontrol(monkeypatch, folder, script: str, job: str) -> None:
    """An `scontrol` running `script` first on PATH, in SLURM job `job`."""
    scontrol = folder / "scontrol"
    scontrol.write_text(f"#!/bin/sh\n{script}\n")
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", job)


def test_sigusr1_in_a_slurm_job_requeues_it_once_after_the_save(data, capsys, monkeypatch, tmp_path):
    calls = tmp_path / "calls"
    _fake_scontrol(monkeypatch, tmp_path, f'echo "$@" >> {calls}', "4242")
    run = data / "requeued"
    _signal_after(monkeypatch, signal.SIGUSR1, 4)
    code, _, err = dlcvkit_here(capsys, *_command(data, run))
    assert code == 128 + signal.SIGUSR1, err
    assert calls.read_text() == "requeue 4242\n"  # once, with the job's id
    lines = err.strip().splitlines()
    assert lines[-2] == "dlcvkit: requeued SLURM job 4242 (scontrol requeue 4242): it continues from this checkpoint"
    assert (run / "checkpoints" / "latest").read_text() == "step_00000004"


def test_a_failed_requeue_is_one_line_and_the_checkpoint_stays(data, capsys, monkeypatch, tmp_path):
    _fake_scontrol(monkeypatch, tmp_path, 'echo "scontrol: error: Requested operation is disabled" >&2; exit 1', "7")
    run = data / "not_requeued"
    _signal_after(monkeypatch, signal.SIGUSR1, 2)
    code, _, err = dlcvkit_here(capsys, *_command(data, run))
    assert code == 128 + signal.SIGUSR1
    assert ("dlcvkit: could not requeue SLURM job 7 (scontrol requeue 7: scontrol: error: Requested operation is "
            "disabled); is it submitted with --requeue? submit the job again") in err
    assert (run / "checkpoints" / "latest").read_text() == "step_00000002"


@pytest.mark.slow  # seconds, but over this module's share of the default suite
def test_resume_auto_passes_over_a_partial_write_and_a_damaged_checkpoint(data, reference, capsys):
    run = data / "damaged"
    shutil.copytree(reference, run)
    root = run / "checkpoints"
    shutil.rmtree(root / "step_00000012")  # as if stopped after step 10 ...
    (root / "latest").write_text("step_00000010")
    for name in ("model.safetensors", "ema.safetensors", "recipe.toml.bak"):
        (run / name).unlink(missing_ok=True)
    partial = root / ".tmp_step_00000011"  # ... with a write of step 11 killed half-way
    shutil.copytree(root / "step_00000010", partial)
    (partial / "trainer_state.json").unlink()
    weights = root / "step_00000010" / "model.safetensors"  # and step 10's weights damaged since
    weights.write_bytes(weights.read_bytes()[:-100])
    assert newest_complete_checkpoint(run)[0] == root / "step_00000008"
    code, _, err = dlcvkit_here(capsys, *_command(data, run))
    assert code == 0, err
    assert (f"dlcvkit: --resume auto: continuing the run in {run} from checkpoints/step_00000008 (step 8 of 12) "
            f"(passed over: step_00000010 (checkpoint file {weights} has") in err
    _same_weights(reference, run)
    assert _steps(run) == list(range(1, TOTAL + 1))
    assert not partial.exists()
    assert _checkpoints(run) == ["step_00000008", "step_00000010", "step_00000012"]


def test_resume_auto_on_a_finished_run_continues_it_with_nothing_to_train(data, reference, capsys, tmp_path):
    run = tmp_path / "finished"
    shutil.copytree(reference, run)
    before = (run / "metrics.jsonl").read_text()
    code, _, err = dlcvkit_here(capsys, *_command(data, run))
    assert code == 0, err
    assert f"dlcvkit: --resume auto: continuing the run in {run} from checkpoints/step_00000012 (step 12 of 12)" in err
    _same_weights(reference, run)
    assert (run / "metrics.jsonl").read_text() == before


def test_resume_auto_where_no_checkpoint_can_be_continued_says_so(data, reference, capsys, tmp_path):
    run = tmp_path / "all_damaged"
    shutil.copytree(reference, run)
    for step in (8, 10, 12):
        (run / "checkpoints" / f"step_{step:08d}" / "optimizer.bin").write_bytes(b"")
    code, _, err = dlcvkit_here(capsys, *_command(data, run))
    assert code == 2
    assert err.startswith(f"dlcvkit: error: --resume auto: no checkpoint in {run / 'checkpoints'} can be continued "
                          "(passed over: step_00000012 (checkpoint file ")
    assert err.rstrip().endswith("start the run anew with --overwrite, or choose another --out")


@pytest.mark.slow
def test_the_recipe_key_train_resume_auto_works_like_the_option(data, capsys, tmp_path, monkeypatch):
    recipe = tmp_path / "auto.toml"
    recipe.write_text(RECIPE + 'resume = "auto"\n')
    run = tmp_path / "by_recipe"
    command = ["classify", "-r", recipe, "--data", data / "train", "--out", run, "--max-steps", 2]
    code, _, err = dlcvkit_here(capsys, *command)
    assert code == 0, err
    assert "starting a new run there" in err
    command[-1] = 4
    code, _, err = dlcvkit_here(capsys, *command)
    assert code == 0, err
    assert f"continuing the run in {run} from checkpoints/step_00000002 (step 2 of 12)" in err
    assert _steps(run) == [1, 2, 3, 4]


def test_resume_accepts_the_first_starts_own_command_line_and_names_a_real_difference(capsys, tmp_path):
    data = tmp_path / "digits"
    synth_cls(data, n=16, size=16, classes=3)
    run = tmp_path / "demo"
    command = ["classify", "-r", "demo_cls", "--data", data, "--out", run, "--resume", "auto",
               "--set", "model.backbone=test_resnet", "--set", "data.img_size=16", "--set", "data.batch_size=8"]
    for steps in (1, 2):  # model.num_classes = 0 in demo_cls: the first start resolved it to 3 from the data
        code, _, err = dlcvkit_here(capsys, *command, "--max-steps", steps)
        assert code == 0, err
    assert load_recipe(run, ClassifyRecipe).model.num_classes == 3
    code, _, err = dlcvkit_here(capsys, *command, "--max-steps", 3, "--set", "optim.lr=0.5")
    assert code == 2
    assert err.splitlines()[-1] == (f"dlcvkit: error: --resume {run}: the recipe differs from the run's own in optim.lr (0.002 in the "
                   "run, 0.5 now); resume with the run's recipe (omit --recipe) or start a new run with --out")


def test_keep_last_is_read_as_keep_checkpoints(tmp_path):
    recipe = tmp_path / "old.toml"
    recipe.write_text(RECIPE.replace("keep_checkpoints = 3", "keep_last = 5"))
    assert load_recipe(recipe, ClassifyRecipe).train.keep_checkpoints == 5
    assert load_recipe(recipe, ClassifyRecipe, ["train.keep_last=1"]).train.keep_checkpoints == 1


@pytest.mark.parametrize("rank", ["0", "1"])
def test_resume_auto_says_what_it_does_from_the_main_process_only(capsys, tmp_path, monkeypatch, rank):
    # Read from the launcher's environment: asking accelerate (before the run's Accelerator chose the CPU) made
    # every process of a CPU launch its own main process, each training alone into the same folder.
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert auto_resume(tmp_path / "new", overwrite=False) is None
    said = f"dlcvkit: --resume auto: no checkpoint in {tmp_path / 'new'}: starting a new run there\n"
    assert capsys.readouterr().err == (said if rank == "0" else "")
