"""What every `dlcvkit bench` command does around its measurement: threads, device and the machine line before;
speed-ups, the table, the goals and the JSON file after. No torch import here: the CLI imports this at start-up."""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Session:
    """One benchmark command: where it measures and where its figures go."""

    device: object  # torch.device
    cache: Path  # synthetic data (kept between runs) and scratch runs
    info: dict  # the machine, see dlcvkit.bench.timing.machine
    json_path: Path | None
    timing: dict  # {"repeats", "warmup"}, as the bench functions take them


def begin(options: dict, device: str = "auto") -> Session:
    """Check the --json file (before minutes of timing) and the --cache folder of a bench command's `options`,
    set its threads, pick its device (`device` where it has no --device), print the machine."""
    from dlcvkit.bench.report import print_header
    from dlcvkit.bench.timing import machine, set_threads
    from dlcvkit.engine.distributed import pick_device
    from dlcvkit.engine.rundir import check_own_folder, mark_folder
    from dlcvkit.outputs import check_output_file

    if options["json_path"] is not None:
        check_output_file(options["json_path"], "--json", options["overwrite"])
    if options.get("cache") is not None:  # the benchmarks write and delete their own sub-folders there
        check_own_folder(options["cache"], "--cache")
    set_threads(options["threads"])
    where = pick_device(options.get("device", device))
    info = machine(where)
    print_header(terminal(), info)
    cache = options.get("cache") or Path(tempfile.gettempdir()) / "dlcvkit-bench"
    mark_folder(cache)
    timing = {key: options[key] for key in ("repeats", "warmup") if key in options}
    return Session(where, cache, info, options["json_path"], timing)


def finish(records: list[dict], session: Session) -> None:
    """Speed-ups, the table and the goals on the terminal; the records to the session's JSON file if any."""
    from dlcvkit.bench.report import print_goals, print_table, write_json
    from dlcvkit.bench.suite import REFERENCES
    from dlcvkit.bench.timing import add_speedups, load_average

    add_speedups(records, REFERENCES)
    out = terminal()
    print_table(out, records)
    print_goals(out, records)
    out.print(f"load average after: {load_average():.2f} (includes this benchmark's own work)", highlight=False)
    if session.json_path is not None:
        write_json(session.json_path, records, session.info)
        out.print(f"wrote {len(records)} records to {session.json_path}", highlight=False)


def terminal():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 150)  # piped or logged: do not squeeze to 80 columns
