"""Real SIGTERM and SIGUSR1 to real runs (issue 26: 1): on 1 process, and on 2 through `dlcvkit launch` with the
signal sent to the whole process group (launcher, processes and loader workers, as SLURM signals every process of
a job step). Each saves a checkpoint at one step agreed by every process and exits 128 + the signal's number; the
same command line with `--resume auto` then ends bit-identical to an uninterrupted run, every step logged once.
SIGUSR1 with SLURM_JOB_ID set and a fake `scontrol` on PATH requeues the job once, from one process."""

import json
import os
import signal
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from dlcvkit.data.synth import synth_cls
from tests.engine.test_reliability_faults import RECIPE, TOTAL, _latest, _run, _start, _wait_for_checkpoint
from tests.engine.test_stop_signals import _same_weights, _steps

pytestmark = pytest.mark.slow  # real processes, 2 of them through the launcher: minutes of CPU

def _command(root, run, procs):
    launch = ["launch", "--procs", 2, "--"] if procs == 2 else []
    return [sys.executable, "-m", "dlcvkit", *map(str, [*launch, "classify", "-r", root / "recipe.toml", "--data",
                                                        root / "train", "--out", run, "--resume", "auto"])]


def _stop(root, name, procs, signum):
    """Start, signal every process of the run once checkpoint 3 exists, then the same command again."""
    run, log = root / name, root / f"{name}.log"
    proc = _start(_command(root, run, procs), log)
    _wait_for_checkpoint(run, 3, proc)
    os.killpg(proc.pid, signum)
    proc.wait(timeout=240)
    stopped = {"code": proc.returncode, "stderr": log.read_text(), "latest": _latest(run)}
    state = run / "checkpoints" / f"step_{stopped['latest']:08d}"
    stopped["files"] = sorted(p.name for p in state.iterdir())
    stopped["state_step"] = json.loads((state / "trainer_state.json").read_text())["step"]
    resumed = subprocess.run(_command(root, run, procs), capture_output=True, text=True, timeout=300,
                             env={k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"})
    return stopped, resumed


@pytest.fixture(scope="module")
def stops(tmp_path_factory):
    root = tmp_path_factory.mktemp("stop_processes")
    (root / "recipe.toml").write_text(RECIPE)
    synth_cls(root / "train", n=48, size=32, classes=4)
    scontrol = root / "bin" / "scontrol"  # records its arguments, one call per line
    scontrol.parent.mkdir()
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {root / "scontrol_calls"}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    os.environ.update(PATH=f"{scontrol.parent}{os.pathsep}{os.environ['PATH']}", SLURM_JOB_ID="77")
    try:
        with ThreadPoolExecutor(2) as pool:
            reference = {p: pool.submit(_run, _command(root, root / f"reference_{p}", p), 600) for p in (1, 2)}
            cases = {(p, s): pool.submit(_stop, root, f"{s.name}_{p}", p, s)
                     for p in (1, 2) for s in (signal.SIGTERM, signal.SIGUSR1)}
            for p, future in reference.items():
                assert future.result().returncode == 0, future.result().stderr
            return root, {key: future.result() for key, future in cases.items()}
    finally:
        os.environ.pop("SLURM_JOB_ID")
        os.environ["PATH"] = os.environ["PATH"].split(os.pathsep, 1)[1]


@pytest.mark.parametrize("procs", [1, 2])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_to_every_process_saves_one_agreed_step_and_resume_auto_is_bit_identical(stops, procs, signum):
    root, results = stops
    stopped, resumed = results[(procs, signum)]
    run = root / f"{signum.name}_{procs}"
    assert stopped["code"] == 128 + signum, stopped["stderr"]
    assert "Traceback" not in stopped["stderr"]
    where = "[process 0 of 2] " if procs == 2 else ""
    line = next(line for line in stopped["stderr"].splitlines() if "stopped after step" in line)
    step = int(line.split("stopped after step ")[1].split()[0])
    assert line == (f"dlcvkit: {where}stopped after step {step} of {TOTAL} by {signum.name}; the checkpoint is saved: "
                    f"continue with --resume {run} (or the same command with --resume auto)")
    assert stopped["latest"] == stopped["state_step"] == step >= 3  # the agreed step's checkpoint, complete
    assert {f"random_states_{rank}.pkl" for rank in range(procs)} <= set(stopped["files"])
    assert resumed.returncode == 0, resumed.stderr
    assert (f"--resume auto: continuing the run in {run} from checkpoints/step_{step:08d} (step {step} of {TOTAL})"
            in resumed.stderr)
    _same_weights(root / f"reference_{procs}", run)
    assert _steps(run) == _steps(root / f"reference_{procs}") == list(range(1, TOTAL + 1))  # a record per save


def test_sigusr1_requeues_the_slurm_job_once_from_one_process(stops):
    root, results = stops
    calls = (root / "scontrol_calls").read_text().splitlines()
    assert calls == ["requeue 77", "requeue 77"]  # one per SIGUSR1 run (1 and 2 processes), none for SIGTERM
    for procs in (1, 2):
        stderr = results[(procs, signal.SIGUSR1)][0]["stderr"]
        assert stderr.count("requeued SLURM job 77 (scontrol requeue 77): it continues from this checkpoint") == 1
