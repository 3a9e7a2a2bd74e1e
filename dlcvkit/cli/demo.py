"""`dlcvkit demo`: see every capability work on embedded data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for data, runs and report.md (must be new or empty).")] = Path("demo_out"),
    quick: Annotated[bool, typer.Option("--quick", help="Small data and few epochs: minutes on a 2-core CPU.")] = False,
    max_steps: Annotated[int, typer.Option("--max-steps", help="Stop every training after N optimizer steps (0 = no "
                                                               "limit; a few for a smoke test).")] = 0,
) -> None:
    """BYOL, fine-tuning A–E, FCN32s vs FCN8s, digits classification with t-SNE, course-format evaluations:
    everything into one folder with report.md and report.html.

    Example: dlcvkit demo --quick --out demo_out
    """
    from dlcvkit.demo import run_demo

    cli = ctx.find_root().command  # this very command line, so that the demo runs what a user types
    run_demo(out, lambda args: cli.main(args=args, prog_name="dlcvkit", standalone_mode=False), quick=quick,
             max_steps=max_steps)
