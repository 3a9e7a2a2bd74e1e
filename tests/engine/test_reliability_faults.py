"""Faults during training, through real processes (issue 7): SIGKILL and `--resume` end bit-identical to an
uninterrupted run (mid-epoch); a kill inside a checkpoint write leaves the previous checkpoint in use; Ctrl-C
saves a checkpoint at the current step, also when only one of two processes gets it; one failing process does
not leave the other hanging.

The scenarios run concurrently in one module fixture (they share the data and one uninterrupted reference run).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dlcvkit.cli import main
from dlcvkit.data.labeled import P1Folder
from dlcvkit.data.synth import synth_cls
from dlcvkit.engine.sampling import TrainBatches

pytestmark = pytest.mark.slow  # SIGKILL and Ctrl-C mid-run, 2-process faults: minutes of CPU

# 48 images / batch 4 = 12 steps per epoch, 24 in all; a checkpoint after every step (the kills need one
# mid-epoch), augmentation and a model EMA so that resuming must restore RNG and EMA state exactly.
RECIPE = """
task = "classify"
[data]
img_size = 32
batch_size = 4
num_workers = 1
[model]
backbone = "test_resnet"
[train]
epochs = 2
log_every = 1
ckpt_every = 1
keep_checkpoints = 3
model_ema = 0.9
"""
STEPS_PER_EPOCH, TOTAL = 12, 24

# Runs the CLI with a real SIGKILL at a chosen point inside a checkpoint write (argv: phase, step, CLI args):
# "write": accelerate has written the temporary folder, the engine's state file is not there yet;
# "pointer": the folder is renamed into place, `latest` still names the previous checkpoint.
KILL_IN_SAVE = """
import os, signal, sys
import accelerate
from dlcvkit.cli import main
from dlcvkit.engine import checkpoint

phase, name = sys.argv[1], f"step_{int(sys.argv[2]):08d}"

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if phase == "write":
    save_state = accelerate.Accelerator.save_state
    def save_then_die(self, output_dir=None, **kwargs):
        save_state(self, output_dir, **kwargs)
        if output_dir.endswith(".tmp_" + name):
            die()
    accelerate.Accelerator.save_state = save_then_die
else:
    write_atomic = checkpoint._write_atomic
    def die_before_pointer(path, text):
        if text == name:
            die()
        write_atomic(path, text)
    checkpoint._write_atomic = die_before_pointer
main(sys.argv[3:])
"""


def _cli(*args):
    return [sys.executable, "-m", "dlcvkit", *map(str, args)]


def _run(cmd, timeout=300, **env):
    return subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env}, check=False)


def _start(cmd, log: Path) -> subprocess.Popen:
    """Start `cmd` in its own process group (as a terminal job), stderr to `log` (a pipe nobody reads could
    fill up and block it)."""
    with open(log, "w") as f:
        return subprocess.Popen(list(map(str, cmd)), stdout=subprocess.DEVNULL, stderr=f, start_new_session=True)


def _latest(run: Path) -> int:
    pointer = run / "checkpoints" / "latest"
    return int(pointer.read_text().removeprefix("step_")) if pointer.is_file() else 0


def _wait_for_checkpoint(run: Path, step: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240
    while _latest(run) < step:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before checkpoint {step}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no checkpoint {step} after 240 s")
        time.sleep(0.005)


def _start_step(stderr: str) -> int:
    return int(re.search(r"from step (\d+) to", stderr)[1])


def _resumed_from(proc) -> int:
    assert proc.returncode == 0, proc.stderr
    return _start_step(proc.stderr)


def _sigkill(root, common):
    """SIGKILL once a mid-epoch checkpoint exists, then --resume."""
    run = root / "killed"
    proc = _start(_cli(*common, "--out", run), root / "killed.log")
    _wait_for_checkpoint(run, 2, proc)
    proc.kill()
    proc.wait()
    return {"killed": proc.returncode, "resume": _run(_cli("classify", "--resume", run))}


def _kill_in_save(root, common):
    """A kill while step 5 is written, resume; a kill between step 9's rename and its pointer, resume again."""
    run, states = root / "kill_in_save", {}
    script = [sys.executable, "-c", KILL_IN_SAVE]
    states["write"] = _run([*script, "write", 5, *common, "--out", run])
    states["after_write"] = (_latest(run), sorted(p.name for p in (run / "checkpoints").iterdir()),
                             sorted(p.name for p in (run / "checkpoints" / ".tmp_step_00000005").iterdir()))
    states["pointer"] = _run([*script, "pointer", 9, "classify", "--resume", run])
    states["after_pointer"] = (_latest(run), sorted(p.name for p in (run / "checkpoints").iterdir()),
                               sorted(p.name for p in (run / "checkpoints" / "step_00000009").iterdir()))
    states["resume"] = _run(_cli("classify", "--resume", run))
    return states


def _sigint(root, common):
    """Ctrl-C to the whole process group (the run and its loader worker, as a terminal does), then --resume."""
    run, log = root / "interrupted", root / "interrupted.log"
    proc = _start(_cli(*common, "--out", run), log)
    _wait_for_checkpoint(run, 3, proc)
    os.killpg(proc.pid, signal.SIGINT)
    proc.wait(timeout=240)
    stderr = log.read_text()
    latest = _latest(run)
    state = json.loads((run / "checkpoints" / f"step_{latest:08d}" / "trainer_state.json").read_text())
    return {"code": proc.returncode, "stderr": stderr, "latest": latest, "state_step": state["step"],
            "weights": (run / "model.safetensors").exists(), "resume": _run(_cli("classify", "--resume", run))}


def _rank_one(run: Path) -> int:
    """The pid of the main process of rank 1 of a launched run (not one of its DataLoader workers)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        if b"RANK=1" in env and str(run).encode() in cmdline:
            found[int(entry.name)] = parent
    mains = [pid for pid, parent in found.items() if parent not in found]
    assert len(mains) == 1, found
    return mains[0]


def _sigint_one_rank(root, common):
    """Ctrl-C to rank 1 only of a 2-process run: both processes must stop after the same step."""
    run, log = root / "interrupted_2proc", root / "interrupted_2proc.log"
    proc = _start(_cli("launch", "--procs", 2, "--", *common, "--out", run, "--set", "train.log_every=3"), log)
    _wait_for_checkpoint(run, 2, proc)
    os.kill(_rank_one(run), signal.SIGINT)
    proc.wait(timeout=240)
    stderr = log.read_text()
    latest = _latest(run)
    return {"code": proc.returncode, "stderr": stderr, "latest": latest,
            "files": sorted(p.name for p in (run / "checkpoints" / f"step_{latest:08d}").iterdir())}


def _failing_rank(root, common):
    """A corrupt image that only rank 1 reads, in the first batch."""
    data = root / "train_rank1_broken"
    synth_cls(data, n=48, size=32, classes=4)
    names = P1Folder(data).names
    sampler = TrainBatches(len(names), 4, 1, 2, seed=0)
    broken = names[next(iter(sampler))[0]]
    (data / broken).write_bytes((data / broken).read_bytes()[:100])
    cmd = _cli("launch", "--procs", 2, "--", "classify", "-r", root / "recipe.toml", "--data", data,
               "--out", root / "failing")
    return {"broken": broken, "proc": _run(cmd, timeout=240, DLCVKIT_COLLECTIVE_TIMEOUT="60")}


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    (root / "recipe.toml").write_text(RECIPE)
    synth_cls(root / "train", n=48, size=32, classes=4)
    synth_cls(root / "val", n=8, size=32, classes=4, seed=1)
    common = ["classify", "-r", root / "recipe.toml", "--data", root / "train", "--val", root / "val"]
    scenarios = {"sigkill": _sigkill, "kill_in_save": _kill_in_save, "sigint": _sigint,
                 "sigint_one_rank": _sigint_one_rank, "failing_rank": _failing_rank}
    with ThreadPoolExecutor(3) as pool:
        reference = pool.submit(_run, _cli(*common, "--out", root / "reference"))
        futures = {name: pool.submit(scenario, root, common) for name, scenario in scenarios.items()}
        assert reference.result().returncode == 0, reference.result().stderr
        return root, {name: future.result() for name, future in futures.items()}


def _assert_same_weights(root, run):
    for name in ("model.safetensors", "ema.safetensors"):
        expected, got = load_file(root / "reference" / name), load_file(root / run / name)
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) for k in expected), f"{run}/{name} differs"


def test_sigkill_mid_epoch_then_resume_is_bit_identical(faults):
    root, results = faults
    result = results["sigkill"]
    assert result["killed"] == -signal.SIGKILL
    start = _resumed_from(result["resume"])
    assert 2 <= start < TOTAL and start % STEPS_PER_EPOCH  # a real resume, in the middle of an epoch
    _assert_same_weights(root, "killed")


def test_kill_inside_a_checkpoint_write_keeps_the_previous_one_in_use(faults):
    root, results = faults
    states = results["kill_in_save"]
    assert states["write"].returncode == -signal.SIGKILL
    latest, entries, partial = states["after_write"]
    assert latest == 4 and ".tmp_step_00000005" in entries and "step_00000005" not in entries
    assert "model.safetensors" in partial and "trainer_state.json" not in partial
    assert states["pointer"].returncode == -signal.SIGKILL
    assert _start_step(states["pointer"].stderr) == 4
    latest, entries, renamed = states["after_pointer"]
    assert latest == 8 and "step_00000009" in entries and "trainer_state.json" in renamed
    assert not [e for e in entries if e.startswith(".tmp_")]  # the next write cleared the partial folder
    assert _resumed_from(states["resume"]) == 8  # the pointer decides, not the newest folder
    _assert_same_weights(root, "kill_in_save")


def test_ctrl_c_saves_the_current_step_and_resume_is_bit_identical(faults):
    root, results = faults
    result = results["sigint"]
    assert result["code"] == 130, result["stderr"]
    assert "Traceback" not in result["stderr"]
    stopped = int(re.search(r"stopped after step (\d+) of 24 by Ctrl-C", result["stderr"])[1])
    assert stopped >= 3 and result["latest"] == stopped and result["state_step"] == stopped
    assert not result["weights"]  # not finished: the checkpoint only
    assert _resumed_from(result["resume"]) == stopped
    _assert_same_weights(root, "interrupted")


def test_ctrl_c_to_one_process_stops_both_after_the_same_step(faults):
    result = faults[1]["sigint_one_rank"]
    assert result["code"] != 0
    stopped = int(re.search(r"\[process 0 of 2\] stopped after step (\d+) of 24 by Ctrl-C", result["stderr"])[1])
    assert stopped >= 2  # agreed after the step in which rank 1 got it, not at a log step (train.log_every = 3)
    assert "Ctrl-C: saving" not in result["stderr"]  # process 0 itself never got the signal
    assert result["latest"] == stopped
    assert {"random_states_0.pkl", "random_states_1.pkl", "trainer_state.json"} <= set(result["files"])


def test_one_failing_process_does_not_leave_the_other_hanging(faults):
    result = faults[1]["failing_rank"]
    proc = result["proc"]  # returned within the subprocess timeout: nobody waited out a collective
    assert proc.returncode != 0
    assert re.search(rf"\[process 1 of 2\] error: cannot decode image \S*{re.escape(result['broken'])}", proc.stderr)
    assert re.search(r"dlcvkit: \[process 0 of 2\] ", proc.stderr), proc.stderr  # the other one says why it stops


def test_resume_reads_every_pickle_with_weights_only(faults, monkeypatch):
    """accelerate pickles the optimizer and RNG states; `--resume` must read them (and nothing else) through
    torch.load(weights_only=True). In-process, on a finished run: loading the checkpoint is all it does."""
    root, _ = faults
    loads, real_load = [], torch.load

    def spy(f, *args, **kwargs):
        loads.append((Path(f).name, kwargs.get("weights_only")))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    with pytest.raises(SystemExit) as done:
        main(["classify", "--resume", str(root / "killed")])
    assert done.value.code in (0, None)
    assert {name for name, _ in loads} == {"optimizer.bin", "random_states_0.pkl"}
    assert all(weights_only is True for _, weights_only in loads), loads
