"""How figures leave a benchmark: the machine line, the rich table, the goals of the issue, the JSON file."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dlcvkit.bench.timing import VALID_LOAD

# (bench, contender, goal as written in the issue, measured value of a record, whether it is met)
GOALS = [
    ("miou", "dlcvkit", ">= 10x torchmetrics", lambda r: r["speedup"], lambda v: v >= 10),
    ("ema", "dlcvkit", "<= 0.8x timm's time", lambda r: 1 / r["speedup"], lambda v: v <= 0.8),
    ("augment", "kornia", ">= 1.3x torchvision", lambda r: r["speedup"], lambda v: v >= 1.3),
    ("augment", "kornia_jitter_compiled", ">= 1.3x torchvision, 100 steps with the compile",
     lambda r: r.get("run_speedup"), lambda v: v >= 1.3),
    ("train", "dlcvkit", "overhead <= 5%", lambda r: r["overhead_pct"], lambda v: v <= 5),
    ("loader", "dlcvkit cache (warm)", ">= 20x dlcvkit decode", lambda r: _in_case(r, "officehome"), lambda v: v >= 20),
    ("loader", "dlcvkit cache (warm)", ">= 5x dlcvkit decode", lambda r: _in_case(r, "p2"), lambda v: v >= 5),
    ("loader", "dlcvkit scaled decode", ">= 3x dlcvkit decode", lambda r: _in_case(r, "officehome"), lambda v: v >= 3),
    ("infer", "dlcvkit", ">= 0.95x forward alone", lambda r: r["speedup"], lambda v: v >= 0.95),
]


def _in_case(record: dict, case: str) -> float | None:
    """The record's speed-up where the goal is set for its case, else None (no goal)."""
    return record["speedup"] if record["case"].startswith(case) else None


def machine_line(info: dict) -> str:
    v = info["versions"]
    return (f"{info['cpu']} ({info['cores']} cores), device {info['device']}, torch {v['torch']} with "
            f"{info['threads']} threads, kornia {v['kornia']}, timm {v['timm']}, torchvision {v['torchvision']}, "
            f"torchmetrics {v['torchmetrics']}; load {info['load_1min_before']:.2f}")


def print_header(console: Console, info: dict) -> None:
    console.print(machine_line(info), highlight=False)
    if info["load_1min_before"] > VALID_LOAD:
        console.print(f"[yellow]warning: the load average is {info['load_1min_before']:.2f} (> {VALID_LOAD}): "
                      "other work shares the CPU, these figures are not valid[/yellow]")


def print_table(console: Console, records: list[dict]) -> None:
    table = Table(title="dlcvkit bench", title_justify="left")
    for column in ("bench", "case", "contender", "per s", "ms median", "ms min-max", "speedup", "notes"):
        table.add_column(column, justify="right" if column in ("per s", "ms median", "speedup") else "left")
    for r in records:
        notes = []
        if r.get("overhead_pct") is not None:
            notes.append(f"overhead {r['overhead_pct']:+.1f}%")
        if r.get("data_wait") is not None:
            notes.append(f"data wait {100 * r['data_wait']:.0f}%")
        if r.get("run_speedup") is not None and r["contender"] != "torchvision":
            notes.append(f"{r['run_speedup']:.2f}x over 100 steps with the first call")
        if r.get("error"):
            notes.append(r["error"][:60])
        timed = r["ms_median"] is not None
        table.add_row(
            r["bench"], r["case"], r["contender"],
            f"{r['samples_per_s']:.1f}" if timed else "-",
            f"{r['ms_median']:.2f}" if timed else "-",
            f"{r['ms_min']:.2f}-{r['ms_max']:.2f}" if timed else "-",
            f"{r['speedup']:.2f}x vs {r['speedup_vs']}" if r["speedup"] is not None else "",
            ", ".join(notes),
        )
    console.print(table)


def goal_rows(records: list[dict]) -> list[tuple[str, str, str, float, bool]]:
    """(bench, case, goal, measured, met) for every record a goal of the issue applies to."""
    rows = []
    for bench, contender, goal, measured, met in GOALS:
        for r in records:
            if r["bench"] == bench and r["contender"] == contender and r["speedup"] is not None:
                value = measured(r)
                if value is not None:
                    rows.append((bench, r["case"], goal, value, met(value)))
    return rows


def print_goals(console: Console, records: list[dict]) -> None:
    rows = goal_rows(records)
    if not rows:
        return
    table = Table(title="goals", title_justify="left")
    for column in ("bench", "case", "goal", "measured", "met"):
        table.add_column(column)
    for bench, case, goal, value, met in rows:
        table.add_row(bench, case, goal, f"{value:.2f}", "[green]yes[/green]" if met else "[red]no[/red]")
    console.print(table)


def write_json(path: Path, records: list[dict], info: dict) -> None:
    """The records as a JSON list, each with the machine it was measured on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r | {"machine": info} for r in records], indent=1) + "\n")
