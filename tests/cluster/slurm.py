"""A real one-node SLURM on this machine for the cluster tests, and the few commands a test gives it.

`start(folder)` installs Debian's slurm-wlm and munge where they are missing (as root), starts munged where
`munge -n | unmunge` fails, then slurmctld and slurmd in the foreground from a config in `folder` (this
machine's node line from `slurmd -C`, ports of their own), and waits until the node is idle. Every command
the tests run gets that config through SLURM_CONF. Jobs stay visible to `scontrol show job` for an hour
(MinJobAge), since without slurmdbd there is no sacct to ask afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TEMPLATE = Path(__file__).resolve().parents[2] / "launch" / "slurm.sbatch"
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "DEADLINE",
         "BOOT_FAIL")
PACKAGES = {"slurmctld": "slurm-wlm", "slurmd": "slurm-wlm", "sbatch": "slurm-wlm", "munged": "munge"}
CONFIG = """\
ClusterName=dlcvkit-tests
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobRequeue=1
MinJobAge=3600
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
{node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=tests Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Slurm:
    """The running daemons (stopped by `stop`) and the commands a test runs against them."""

    folder: Path
    daemons: list[subprocess.Popen] = field(default_factory=list)
    logs: dict[str, Path] = field(default_factory=dict)  # job id -> its output file, read while the job exists

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.folder / "slurm.conf")}

    def run(self, *command: str) -> str:
        """A SLURM command's stdout; its stderr in the failure."""
        proc = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def submit(self, script: Path, *args, sbatch: tuple[str, ...] = (), env: dict | None = None,
               cwd: Path | None = None) -> str:
        """`sbatch SBATCH... SCRIPT ARGS...` with this process's environment plus `env`; the job id."""
        proc = subprocess.run(["sbatch", "--parsable", *sbatch, str(script), *map(str, args)], cwd=cwd,
                              env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise AssertionError(f"sbatch {script} exited {proc.returncode}: {proc.stderr.strip()}")
        job = proc.stdout.strip().split(";")[0]
        self.logs[job] = Path(self.job(job)["StdOut"])
        return job

    def launch(self, *command, procs: int = 2, cwd: Path, env: dict | None = None) -> str:
        """launch/slurm.sbatch running `dlcvkit COMMAND...` as `procs` CPU processes on one node; the job id.
        Its log is cwd/dlcvkit-JOBID.out."""
        return self.submit(TEMPLATE, *command, sbatch=("--gpus-per-node=0", "--nodes=1", "--ntasks-per-node=1",
                                                       f"--cpus-per-task={procs}"),
                           env={"DLCVKIT_PROCS_PER_NODE": str(procs), **(env or {})}, cwd=cwd)

    def job(self, job: str) -> dict[str, str]:
        """`scontrol show job` as KEY -> value (JobState, Restarts, ExitCode, StdOut, ...)."""
        fields = self.run("scontrol", "show", "job", "--oneliner", job).split()
        return dict(f.split("=", 1) for f in fields if "=" in f)

    def wait(self, job: str, *states: str, timeout: float = 600) -> dict[str, str]:
        """The job's fields once its JobState is one of `states` (default: any end, ENDED)."""
        states = states or ENDED
        self.wait_for(lambda: self.job(job)["JobState"] in states, f"JobState in {states}", job, timeout)
        return self.job(job)

    def wait_for(self, condition, what: str, job: str, timeout: float = 120) -> None:
        """Poll `condition()` until it holds; fail after `timeout` s naming `what`, the job's state and log."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job}: no {what} after {timeout} s (JobState "
                                     f"{self.job(job)['JobState']}); its log:\n{self.log(job)}")
            time.sleep(0.5)

    def requeue(self, job: str, timeout: float = 120) -> None:
        """`scontrol requeue` (SIGTERM to every process, then back to the queue), then `start_now`."""
        self.run("scontrol", "requeue", job)
        self.start_now(job, timeout)

    def start_now(self, job: str, timeout: float = 120) -> None:
        """Once the job is back in the queue (requeued by `requeue` or by itself), start it at once rather than
        after the ~2 minutes of EligibleTime that SLURM gives a requeued job."""
        self.wait(job, "PENDING", timeout=timeout)
        self.run("scontrol", "update", f"jobid={job}", "StartTime=now")

    def signal(self, job: str, name: str = "USR1") -> None:
        """`scancel --full --signal=NAME`: the batch shell and every process of the job's steps."""
        self.run("scancel", "--full", f"--signal={name}", job)

    def log(self, job: str) -> str:
        path = self.logs[job]
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        """Cancel the jobs a failed test left running (slurmd's end would not end them), then end the daemons
        this fixture started, by their PID, newest first."""
        try:
            if self.logs:
                subprocess.run(["scancel", *self.logs], env=self.env, capture_output=True, timeout=60)
                for job in self.logs:
                    self.wait(job, timeout=60)
        finally:
            for daemon in reversed(self.daemons):
                daemon.terminate()
                try:
                    daemon.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    daemon.wait()


def start(folder: Path) -> Slurm:
    """A one-node SLURM from a config in `folder`; skips the test where it cannot be had."""
    _install()
    slurm = Slurm(folder)
    try:
        if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode != 0:
            slurm.daemons.append(_start_munged())
        _write_config(folder)
        for daemon in ("slurmctld", "slurmd"):
            with open(folder / "log" / f"{daemon}.out", "w") as out:
                slurm.daemons.append(subprocess.Popen([daemon, "-D"], env=slurm.env, stdout=out, stderr=out))
            time.sleep(1)
        _wait_idle(slurm)
    except BaseException:
        slurm.stop()
        raise
    return slurm


def _install() -> None:
    missing = sorted({package for command, package in PACKAGES.items() if shutil.which(command) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.skip(f"SLURM tests: {', '.join(missing)} missing and not root to apt-get install them")
    apt = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    for command in (["apt-get", "update", "-q"], install):
        proc = subprocess.run(command, env=apt, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            # as root the tests must run: a failed install is a failure, never a quiet skip
            pytest.fail(f"SLURM tests: `{' '.join(command)}` failed: {proc.stderr.strip()[-300:]}")


def _start_munged() -> subprocess.Popen:
    """munged as the munge user (Debian's key belongs to it), in the foreground so that its PID is ours."""
    run = Path("/run/munge")
    run.mkdir(exist_ok=True)
    shutil.chown(run, "munge", "munge")
    munged = subprocess.Popen(["munged", "--foreground"], user="munge", group="munge", stderr=subprocess.PIPE)
    for _ in range(50):
        if subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0:
            return munged
        time.sleep(0.2)
    munged.kill()
    raise AssertionError(f"munged did not start: {munged.communicate()[1].decode()}")


def _write_config(folder: Path) -> None:
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    # `slurmd -C` prints this machine's node line: its short hostname, CPUs, sockets, cores and memory.
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    host = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
    ctld_port, d_port = _free_ports(2)
    (folder / "slurm.conf").write_text(CONFIG.format(host=host, folder=folder, node=node, ctld_port=ctld_port,
                                                     d_port=d_port))


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _wait_idle(slurm: Slurm, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for daemon in slurm.daemons:
            if daemon.poll() is not None:
                raise AssertionError(f"{daemon.args[0]} exited {daemon.returncode}: "
                                     f"{_tail(slurm.folder / 'log')}")
        sinfo = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%T"], env=slurm.env,
                               capture_output=True, text=True)
        if sinfo.stdout.strip() == "idle":  # before slurmctld answers, sinfo fails: keep waiting
            return
        time.sleep(0.5)
    raise AssertionError(f"the SLURM node is not idle after {timeout} s: {_tail(slurm.folder / 'log')}")


def _tail(logs: Path) -> str:
    return "\n".join(f"{p.name}: {p.read_text()[-1500:]}" for p in sorted(logs.iterdir()))

