"""launch/slurm.sbatch under a real SLURM: a 2-process CPU run to the end, and the signals of preemption."""

import json
import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.cli_runner import dlcvkit
from tests.cluster.slurm import TEMPLATE

pytestmark = pytest.mark.slow


def test_template_runs_a_two_process_segmentation_on_cpu_nodes(slurm, tmp_path):
    data = tmp_path / "seg"
    dlcvkit("data", "synth", "seg", "--out", data, "--n", 8, "--img-size", 32)
    # The command line: DLCVKIT_PROCS_PER_NODE=2 sbatch --gpus-per-node=0 --nodes=1 --ntasks-per-node=1
    # --cpus-per-task=2 launch/slurm.sbatch segment ...
    job = slurm.launch("segment", "-r", "demo_seg", "--data", data, "--val", data, "--out", tmp_path / "run",
                       "--max-steps", 2, "--set", "data.img_size=32", procs=2, cwd=tmp_path)
    info = slurm.wait(job)
    log = slurm.log(job)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), log
    assert slurm.logs[job] == tmp_path / f"dlcvkit-{job}.out"  # the header's --output, in the submit folder
    host = info["NodeList"]
    assert f"dlcvkit: job {job} start 1 (restart count 0), 1 node {host}, 2 processes, 2 per node," in log
    assert "SegmentTask: 8 steps (1/epoch), 2 processes on cpu" in log
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert (tmp_path / "run" / "model.safetensors").is_file() and steps[-1] == 2, log


# A stand-in for dlcvkit that the template starts instead (found first on PYTHONPATH): each process notes that
# it started and the signals it receives in files named after the job's start and its rank, and ends on
# SIGTERM. The first start waits for signals up to STANDIN_WAIT seconds; a requeued one ends at once.
STANDIN = """
import os, signal, sys, time
notes, rank, start = os.environ["NOTES"], os.environ.get("RANK", "0"), os.environ.get("SLURM_RESTART_COUNT", "0")

def note(signum, frame):
    with open(os.path.join(notes, f"start{start}-rank{rank}-{signal.Signals(signum).name}"), "w") as f:
        f.write(str(os.getpid()))
    if signum == signal.SIGTERM:
        sys.exit(0)

for s in (signal.SIGTERM, signal.SIGUSR1):
    signal.signal(s, note)
note(signal.SIGCONT, None)  # ready
if start == "0":
    time.sleep(float(os.environ["STANDIN_WAIT"]))
"""


def standin(tmp_path: Path, wait: float) -> dict[str, str]:
    """The environment that makes the template start STANDIN; its notes go to tmp_path/notes."""
    (tmp_path / "standin" / "dlcvkit").mkdir(parents=True)
    (tmp_path / "standin" / "dlcvkit" / "__init__.py").write_text("")  # a package, not a namespace portion
    (tmp_path / "standin" / "dlcvkit" / "__main__.py").write_text(STANDIN)
    (tmp_path / "notes").mkdir()
    return {"NOTES": str(tmp_path / "notes"), "STANDIN_WAIT": str(wait),
            "PYTHONPATH": os.pathsep.join([str(tmp_path / "standin"), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize(("procs_per_node", "gpus", "expected"), [(None, 0, 1), (None, 3, 3), ("2", 3, 2)])
def test_processes_per_node_come_from_the_variable_else_the_gpus_else_one(slurm, tmp_path, procs_per_node,
                                                                           gpus, expected):
    env = standin(tmp_path, wait=0)
    # An nvidia-smi that lists `gpus` GPUs (none: it fails, as where no driver is installed).
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvidia-smi").write_text(
        "#!/bin/sh\n" + (f"for i in $(seq 0 {gpus - 1}); do echo \"GPU $i: H100 (UUID: GPU-$i)\"; done\n" if gpus
                         else "exit 9\n"))
    (tmp_path / "bin" / "nvidia-smi").chmod(0o755)
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"
    if procs_per_node:
        env["DLCVKIT_PROCS_PER_NODE"] = procs_per_node
    job = slurm.submit(TEMPLATE, "segment", sbatch=("--nodes=1", "--cpus-per-task=2"), env=env, cwd=tmp_path)
    info = slurm.wait(job, timeout=120)
    log = slurm.log(job)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), log
    assert f", {expected} process{'es' if expected > 1 else ''}, {expected} per node," in log
    started = sorted(p.name for p in (tmp_path / "notes").iterdir())
    assert started == [f"start0-rank{r}-SIGCONT" for r in range(expected)]


def test_requeue_and_the_warning_signal_reach_every_process_and_the_job_comes_back(slurm, tmp_path):
    notes = tmp_path / "notes"
    job = slurm.launch("segment", "--out", "RUN", procs=2, env=standin(tmp_path, wait=300), cwd=tmp_path)

    def noted(*names):
        slurm.wait_for(lambda: all((notes / n).exists() for n in names), f"{names} in {notes}", job)
        return [(notes / n).read_text() for n in names]

    ready = noted("start0-rank0-SIGCONT", "start0-rank1-SIGCONT")
    slurm.signal(job, "USR1")
    assert noted("start0-rank0-SIGUSR1", "start0-rank1-SIGUSR1") == ready
    slurm.requeue(job)  # SIGTERM: the same processes, so the launchers outlived SIGUSR1
    assert noted("start0-rank0-SIGTERM", "start0-rank1-SIGTERM") == ready
    info = slurm.wait(job, timeout=120)
    log = slurm.log(job)
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), log
    assert noted("start1-rank0-SIGCONT", "start1-rank1-SIGCONT")
    host = info["NodeList"]
    assert f"dlcvkit: job {job} start 1 (restart count 0), 1 node {host}, 2 processes, 2 per node," in log
    assert f"dlcvkit: job {job} start 2 (restart count 1), 1 node {host}, 2 processes, 2 per node," in log
    # The first start ended by the requeue, not earlier: SIGUSR1 did not end the batch shell either.
    assert re.search(rf"\*\*\* JOB {job} ON {host} CANCELLED AT \S+ DUE TO JOB REQUEUE \*\*\*", log), log


# Preemption of a real run (issue 26: 5): 2 processes, 3 epochs of 6 steps, checkpoints only at epoch ends, so a
# stop early in an epoch resumes from the checkpoint that the stop itself saved. The reference is the same
# command through the template, uninterrupted: same launcher, process count and threads.
STEPS, TOTAL = 6, 18
SETTINGS = ("data.img_size=32", "data.batch_size=4", "train.epochs=3", "train.log_every=1", "train.model_ema=0.9",
            "train.keep_checkpoints=1")


def segment(slurm, data: Path, run: Path, cwd: Path) -> str:
    sets = [arg for setting in SETTINGS for arg in ("--set", setting)]
    return slurm.launch("segment", "-r", "demo_seg", "--data", data, "--val", data, "--out", run, "--resume", "auto",
                        *sets, procs=2, cwd=cwd)


@pytest.fixture(scope="module")
def uninterrupted(slurm, tmp_path_factory):
    """The synthetic data and the run folder of the uninterrupted reference run."""
    root = tmp_path_factory.mktemp("preempt")
    dlcvkit("data", "synth", "seg", "--out", root / "seg", "--n", 24, "--img-size", 32)
    job = segment(slurm, root / "seg", root / "reference", root)
    info = slurm.wait(job)
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "0"), slurm.log(job)
    assert f"SegmentTask: {TOTAL} steps ({STEPS}/epoch), 2 processes on cpu" in slurm.log(job)
    return root / "seg", root / "reference"


def records(run: Path) -> list[dict]:
    """metrics.jsonl without the timings, which differ from run to run."""
    return [{k: v for k, v in json.loads(line).items() if k not in ("samples_per_s", "data_wait")}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("stop", ["requeue", "USR1"])
def test_a_preempted_job_saves_comes_back_and_ends_bit_identical_to_an_uninterrupted_one(slurm, uninterrupted,
                                                                                          tmp_path, stop):
    data, reference = uninterrupted
    run = tmp_path / "run"
    job = segment(slurm, data, run, tmp_path)
    # In the middle of the first epoch: the first start has logged steps, and no checkpoint exists yet.
    slurm.wait_for(lambda: len(records(run)) >= 2 if (run / "metrics.jsonl").exists() else False,
                   "2 steps in metrics.jsonl", job, timeout=300)
    if stop == "requeue":
        slurm.requeue(job)  # SIGTERM to every process: they save, SLURM requeues
    else:
        slurm.signal(job, "USR1")  # the warning before the time limit: they save, the run requeues its job
        slurm.start_now(job)
    info = slurm.wait(job)
    log = slurm.log(job)
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "1"), log
    signal = "SIGTERM" if stop == "requeue" else "SIGUSR1"
    assert f"dlcvkit: {signal}: saving a checkpoint after this step and stopping" in log
    saved = re.findall(rf"dlcvkit: \[process 0 of 2\] stopped after step (\d+) of {TOTAL} by {signal}; the "
                       rf"checkpoint is saved: continue with --resume {run} \(or the same command with --resume "
                       r"auto\)", log)
    assert len(saved) == 1, log
    step = int(saved[0])
    assert 2 <= step < TOTAL
    requeued = f"dlcvkit: requeued SLURM job {job} (scontrol requeue {job}): it continues from this checkpoint"
    assert log.count(requeued) == (stop == "USR1"), log
    # The second start continues from the checkpoint that the stop saved, with the first start's command line.
    assert (f"--resume auto: continuing the run in {run} from checkpoints/step_{step:08d} (step {step} of {TOTAL})"
            in log), log
    for name in ("model.safetensors", "ema.safetensors"):
        x, y = load_file(reference / name), load_file(run / name)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), f"{run}/{name} differs"
    # Every step once, every evaluation once, with the uninterrupted run's values.
    assert [r["step"] for r in records(run) if "split" not in r] == list(range(1, TOTAL + 1))
    assert [r["step"] for r in records(run) if "split" in r] == [STEPS, 2 * STEPS, TOTAL]
    assert records(run) == records(reference)
    assert (run / "summary.csv").read_text() == (reference / "summary.csv").read_text()
