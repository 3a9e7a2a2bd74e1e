"""`dlcvkit report`: a run's report, or several runs side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def report(
    runs: Annotated[list[Path], typer.Argument(help="One run folder (its report), or several (a comparison).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="With several runs: also write OUT/compare.md and .html.")] = None,
) -> None:
    """Write RUN_DIR/report.md + report.html (curves, metrics, pictures, recipe), or compare several runs."""
    from rich.console import Console
    from rich.table import Table

    from dlcvkit.report import Block, comparison, write_report, write_run_report

    if len(runs) == 1:
        typer.echo(f"wrote {write_run_report(runs[0])} and report.html")
        return
    header, rows = comparison(runs)
    table = Table(*header, title="dlcvkit runs")
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    if out is not None:
        md, _ = write_report([Block("heading", "Run comparison", level=1), Block("table", header=header, rows=rows)],
                             out, name="compare")
        typer.echo(f"wrote {md} and compare.html")
