"""The CLI starts every way the README shows, and bad input gives one line and exit code 2."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_runner import dlcvkit

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("cmd", [
    ["dlcvkit", "--help"],
    [sys.executable, "-m", "dlcvkit", "--help"],
    [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
     "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "dlcvkit", "--help"],
    # from the repository root, the package folder itself is the script
    [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
     "--mixed_precision", "no", "--dynamo_backend", "no", "dlcvkit", "--help"],
])
def test_help_runs_every_documented_way(cmd):
    if cmd[0] == "dlcvkit" and shutil.which("dlcvkit") is None:
        pytest.skip("console script not on PATH")
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Usage: dlcvkit" in out.stdout and "classify" in out.stdout


def test_unknown_recipe_key_is_one_line(tmp_path):
    (tmp_path / "r.toml").write_text('task = "classify"\n')
    proc = dlcvkit("classify", "-r", tmp_path / "r.toml", "--out", tmp_path / "run", "--data", tmp_path,
                   "--set", "optim.lrr=1", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "optim.lrr" in proc.stderr and "optim.lr," in proc.stderr
    assert "Traceback" not in proc.stderr


def test_debug_shows_the_traceback(tmp_path):
    proc = dlcvkit("classify", "-r", tmp_path / "missing.toml", "--out", tmp_path / "run", "--debug", check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "missing.toml" in proc.stderr


def test_missing_recipe_and_missing_out(tmp_path):
    proc = dlcvkit("classify", "-r", tmp_path / "missing.toml", "--out", tmp_path / "run", check=False)
    assert proc.returncode == 2 and "missing.toml" in proc.stderr and "Traceback" not in proc.stderr
    proc = dlcvkit("classify", "-r", ROOT / "launch" / "cpu.yaml", check=False)
    assert proc.returncode == 2 and "--out" in proc.stderr
