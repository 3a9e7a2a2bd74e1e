"""`dlcvkit launch` builds the accelerate command; the shipped configs load with accelerate's own parser."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file

from dlcvkit.cli.launch import launch_command
from dlcvkit.errors import DlcvkitError

LAUNCH = Path(__file__).parents[2] / "launch"


@pytest.mark.parametrize("name, kind, procs, machines", [
    ("cpu.yaml", "NO", 1, 1), ("cpu_2proc.yaml", "MULTI_GPU", 2, 1), ("single_gpu.yaml", "NO", 1, 1),
    ("multi_gpu.yaml", "MULTI_GPU", 8, 1), ("multi_node.yaml", "MULTI_GPU", 16, 2),
])
def test_shipped_configs_parse(name, kind, procs, machines):
    config = load_config_from_file(str(LAUNCH / name))
    assert (str(config.distributed_type).split(".")[-1], config.num_processes, config.num_machines) == (kind, procs, machines)


def _flags(cmd):
    return cmd[cmd.index("accelerate.commands.launch") + 1 : cmd.index("-m", 3)]


def test_procs_give_a_multi_process_run_with_a_free_port():
    cmd = launch_command(["byol", "--help"], None, 0, 2, 1, 0, "", 0)
    flags = _flags(cmd)
    assert cmd[-3:] == ["dlcvkit", "byol", "--help"]
    assert flags[flags.index("--num_processes") + 1] == "2" and "--multi_gpu" in flags
    assert int(flags[flags.index("--main_process_port") + 1]) > 0


def test_multi_node_flags():
    flags = _flags(launch_command(["segment"], None, 8, 0, 2, 1, "10.0.0.1", 0))
    pairs = dict(zip(flags[::1], flags[1::1]))
    assert pairs["--num_processes"] == "16" and pairs["--num_machines"] == "2" and pairs["--machine_rank"] == "1"
    assert pairs["--main_process_ip"] == "10.0.0.1" and pairs["--main_process_port"] == "29500"


def test_single_gpu_is_not_multi_gpu():
    assert "--multi_gpu" not in _flags(launch_command(["classify"], None, 1, 0, 1, 0, "", 0))


@pytest.mark.parametrize("args, message", [
    (([], None, 0, 2, 1, 0, "", 0), "after `--`"),
    ((["x"], None, 2, 2, 1, 0, "", 0), "not both"),
    ((["x"], Path("nope.yaml"), 0, 0, 1, 0, "", 0), "nope.yaml"),
    ((["x"], None, 8, 0, 2, 0, "", 0), "--main-ip"),
])
def test_bad_launch_options(args, message):
    with pytest.raises(DlcvkitError, match=message):
        launch_command(*args)
