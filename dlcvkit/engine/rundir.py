"""Checks on a run folder before anything is trained or written into it."""

from __future__ import annotations

import os
from pathlib import Path

from dlcvkit.engine.checkpoint import latest_checkpoint
from dlcvkit.errors import DlcvkitError


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """A new run needs a writable folder that holds no run yet; a resumed one needs a recipe and a checkpoint."""
    if resume:
        if not (run_dir / "recipe.toml").is_file():
            raise DlcvkitError(f"--resume {run_dir}: not a dlcvkit run folder (no recipe.toml)")
        if latest_checkpoint(run_dir) is None:
            raise DlcvkitError(f"--resume {run_dir}: no complete checkpoint in {run_dir / 'checkpoints'}")
        return
    if (run_dir / "recipe.toml").exists() or (run_dir / "checkpoints").exists():
        raise DlcvkitError(
            f"--out {run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise DlcvkitError(f"cannot write to the run folder {run_dir} (--out): {e.strerror or e}") from None
