"""Run the real CLI: in a subprocess, as a user would, or in this process (where a test patches something)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dlcvkit.cli import main


def dlcvkit(*args, cwd=None, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python -m dlcvkit ARGS`; with `check`, fail the test with the command's output if it exits non-zero."""
    proc = subprocess.run([sys.executable, "-m", "dlcvkit", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"dlcvkit {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def dlcvkit_here(capsys, *args) -> tuple[int, str, str]:
    """The CLI in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exited.value.code, out.out, out.err
