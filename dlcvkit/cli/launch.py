"""`dlcvkit launch`: run any dlcvkit command through accelerate's launcher without remembering its flags."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlcvkit.errors import DlcvkitError


def launch(
    ctx: typer.Context,
    config: Annotated[Optional[Path], typer.Option("--config", help="An accelerate config file, e.g. launch/multi_gpu.yaml.")] = None,
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs on this node (one process each).")] = 0,
    procs: Annotated[int, typer.Option("--procs", help="Processes on this node; on a CPU-only machine a gloo run.")] = 0,
    nodes: Annotated[int, typer.Option("--nodes", help="Machines in the run (with --node-rank and --main-ip).")] = 1,
    node_rank: Annotated[int, typer.Option("--node-rank", help="This machine's rank, 0..nodes-1.")] = 0,
    main_ip: Annotated[str, typer.Option("--main-ip", help="Address of the rank-0 machine (multi-node).")] = "",
    port: Annotated[int, typer.Option("--port", help="Rendezvous port (default: a free one on a single node, 29500 on many).")] = 0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the accelerate command instead of running it.")] = False,
) -> None:
    """Run `dlcvkit <command ...>` (everything after `--`) under `accelerate launch`.

    Example: dlcvkit launch --gpus 8 -- segment --recipe seg_fcn8s_vgg16 --data p2/train --out runs/fcn8s
    """
    command = launch_command(ctx.args, config, gpus, procs, nodes, node_rank, main_ip, port)
    if dry_run:
        print(shlex.join(command))
        return
    with _waiting_through(signal.SIGTERM, signal.SIGUSR1):
        code = subprocess.call(command, env=launcher_environment())
    raise typer.Exit(code)


@contextlib.contextmanager
def _waiting_through(*signals: int):
    """Keep waiting for the launcher when a scheduler's stop signal arrives: it reaches every process of the job
    (SLURM signals all of a job step's, a terminal or `kill -TERM -PGID` the process group), and the run saves a
    checkpoint before it ends. Forwarding it would give the launcher a second one, which cuts its wait for the
    processes short. A handler, not SIG_IGN: an ignored signal stays ignored in the processes started meanwhile."""
    previous = {s: signal.signal(s, lambda signum, frame: None) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# torchrun (under `accelerate launch`) forwards these to the processes it starts and then waits up to 30 s
# (--shutdown-timeout) for them; its default list lacks SIGUSR1, whose default action would end the launcher and
# leave the processes without it. PET_* variables are torchrun's options.
FORWARDED_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"


def launcher_environment() -> dict[str, str]:
    """The environment of the launcher: this one, with SIGUSR1 forwarded unless the user chose the signals."""
    return {"PET_SIGNALS_TO_HANDLE": FORWARDED_SIGNALS, **os.environ}


def launch_command(args: list[str], config: Path | None, gpus: int, procs: int, nodes: int, node_rank: int,
                   main_ip: str, port: int) -> list[str]:
    """The `python -m accelerate.commands.launch ... -m dlcvkit ARGS` command line."""
    if not args:
        raise DlcvkitError("dlcvkit launch: give the command to run after `--`, e.g. dlcvkit launch --procs 2 -- byol ...")
    if gpus and procs:
        raise DlcvkitError("dlcvkit launch: pass --gpus or --procs, not both")
    if config is not None and not config.is_file():
        raise DlcvkitError(f"dlcvkit launch --config {config}: no such file (see the launch/ folder)")
    if nodes > 1 and not main_ip:
        raise DlcvkitError("dlcvkit launch --nodes N needs --main-ip (the rank-0 machine's address)")
    flags: list[str] = []
    if config is not None:
        flags += ["--config_file", str(config)]
    else:
        flags += ["--mixed_precision", "no", "--dynamo_backend", "no"]  # the recipe decides these
    per_node = gpus or procs
    if per_node:
        flags += ["--num_processes", str(per_node * nodes)]
        if per_node * nodes > 1:
            flags.append("--multi_gpu")
    if config is None or nodes > 1:
        flags += ["--num_machines", str(nodes)]
    if nodes > 1:
        flags += ["--machine_rank", str(node_rank), "--main_process_ip", main_ip]
    if port or per_node * nodes > 1:
        flags += ["--main_process_port", str(port or (29500 if nodes > 1 else _free_port()))]
    return [sys.executable, "-m", "accelerate.commands.launch", *flags, "-m", "dlcvkit", *args]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
