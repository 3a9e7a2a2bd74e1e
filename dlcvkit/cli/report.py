"""`dlcvkit report`: a run's report, or several runs side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dlcvkit.cli.options import OverwriteOpt

COMPARE_FILES = ("compare.md", "compare.html")


def report(
    runs: Annotated[list[Path], typer.Argument(help="One run folder (its report), or several (a comparison).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="With several runs: also write OUT/compare.md and .html.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write RUN_DIR/report.md + report.html (curves, metrics, pictures, recipe), or compare several runs.

    Example: dlcvkit report runs/fcn32s runs/fcn8s --out compare
    """
    from rich.console import Console
    from rich.table import Table

    from dlcvkit.outputs import check_output_file
    from dlcvkit.report import Block, comparison, write_report, write_run_report
    from dlcvkit.runnames import REPORT_FILES, RUN_MARKER

    if len(runs) == 1:
        if not (runs[0] / RUN_MARKER).is_file():  # in a run folder of ours the report's files are ours to replace
            for name in REPORT_FILES:
                check_output_file(runs[0] / name, "RUN_DIR", overwrite)
        typer.echo(f"wrote {write_run_report(runs[0])} and report.html")
        return
    if out is not None:
        for name in COMPARE_FILES:
            check_output_file(out / name, "--out", overwrite)
    header, rows = comparison(runs)
    table = Table(*header, title="dlcvkit runs")
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    if out is not None:
        md, _ = write_report([Block("heading", "Run comparison", level=1), Block("table", header=header, rows=rows)],
                             out, name="compare")
        typer.echo(f"wrote {md} and compare.html")
