"""Run reports a person reads without opening JSON: RUN_DIR/report.md and report.html (curves, final metrics,
pictures, throughput, the resolved recipe), and comparison tables of several runs.

A report is a list of blocks rendered twice, as Markdown (pictures linked) and as one self-contained HTML file
(pictures inlined), so both say the same thing. A report reads nothing but the run folder (metrics.jsonl, the
last checkpoint's state, recipe.toml, pictures).
"""

from __future__ import annotations

import base64
import html
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from dlcvkit.config import recorded_recipe
from dlcvkit.engine.checkpoint import STATE_FILE, latest_checkpoint
from dlcvkit.diskfull import write_atomic
from dlcvkit.engine.runlog import read_metrics
from dlcvkit.runnames import BEST_FILE, CURVES_FILE, RECIPE_FILE, REPORT_HTML, REPORT_MD, REPORT_NAME


@dataclass
class Block:
    """One piece of a report: kind is heading | text | table | image | code | runs (`text`, then a link to the
    report of each run folder in `rows`: [name, folder]). Text and table cells are Markdown (`code`, links)."""

    kind: str
    text: str = ""
    level: int = 2
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    path: Path | None = None


def run_summary(run_dir: Path) -> dict:
    """What a run did: task, steps, last validation metrics, best metric, throughput."""
    run_dir = Path(run_dir)
    task = recorded_recipe(run_dir).get("task", "")
    records = read_metrics(run_dir)
    train = [r for r in records if "split" not in r]
    val = [r for r in records if r.get("split") == "val"]
    # the first interval includes start-up (workers, allocation): leave it out of the throughput when possible
    speeds = [r["samples_per_s"] for r in (train[1:] or train) if "samples_per_s" in r]
    waits = [r["data_wait"] for r in (train[1:] or train) if "data_wait" in r]
    checkpoint = latest_checkpoint(run_dir)
    state = json.loads((checkpoint / STATE_FILE).read_text()) if checkpoint else {}
    return {
        "name": run_dir.name,
        "task": task,
        "step": max((r["step"] for r in records), default=0),
        "epoch": max((r.get("epoch", 0) for r in records), default=0),
        "final_loss": train[-1]["loss"] if train else None,
        "val": {k: v for k, v in (val[-1] if val else {}).items() if k not in ("step", "epoch", "split")},
        "best": state.get("best"),
        "best_metric": state.get("best_metric") or _best_metric(run_dir / BEST_FILE),
        "best_step": state.get("best_step"),
        "best_epoch": state.get("best_epoch"),
        "total_steps": state.get("total_steps"),  # the schedule's steps (checkpoints of earlier versions: absent)
        "steps_per_epoch": state.get("steps_per_epoch"),
        "samples_per_s": statistics.median(speeds) if speeds else None,
        "data_wait": statistics.mean(waits) if waits else None,
    }


def _best_metric(path: Path) -> str:
    """The name of the metric whose best value chose `best.safetensors` (recorded in its metadata)."""
    if not path.is_file():
        return "metric"
    from safetensors import safe_open

    with safe_open(str(path), "pt") as weights:
        names = [k for k in (weights.metadata() or {}) if k not in ("format", "step")]
    return names[0] if names else "metric"


def run_report_blocks(run_dir: Path) -> list[Block]:
    """The report of one run."""
    from dlcvkit.viz.curves import plot_curves

    run_dir = Path(run_dir)
    s = run_summary(run_dir)
    blocks = [Block("heading", f"Run report: {s['name']} ({s['task']})", level=1)]
    facts = _progress_facts(s)
    if s["final_loss"] is not None:
        facts.append(["last training loss", _fmt(s["final_loss"])])
    if s["best"] is not None:
        epoch = f"epoch {s['best_epoch']}, " if s["best_epoch"] is not None else ""
        facts.append([f"best validation {s['best_metric']}",
                      f"{_fmt(s['best'])} ({epoch}step {s['best_step']}: best.safetensors)"])
    if s["samples_per_s"] is not None:
        facts.append(["throughput (median)", f"{s['samples_per_s']:.1f} samples/s"])
    if s["data_wait"] is not None:
        facts.append(["time waiting for data", f"{100 * s['data_wait']:.1f}%"])
    blocks.append(Block("table", header=["", ""], rows=facts))
    if s["val"]:
        blocks += [Block("heading", "Final validation metrics (the last evaluation, model.safetensors)"),
                   Block("table", header=["metric", "value"], rows=[[k, _fmt(v)] for k, v in s["val"].items()])]
    classes = recorded_recipe(run_dir).get("model", {}).get("num_classes")  # the chance level of accuracy
    curves = plot_curves(read_metrics(run_dir), run_dir / CURVES_FILE, classes)
    pictures = ([curves] if curves else []) + sorted(p for p in run_dir.glob("*.png") if p.name != CURVES_FILE)
    pictures += sorted(run_dir.glob("tsne/*.png"))
    if pictures:
        blocks.append(Block("heading", "Pictures"))
        blocks += [Block("image", text=p.stem.replace("_", " "), path=p) for p in pictures]
    blocks += [Block("heading", "Recipe"), Block("code", (run_dir / RECIPE_FILE).read_text())]
    return blocks


def _progress_facts(s: dict) -> list[list[str]]:
    """Steps and epochs run, of those planned: a run cut by --max-steps says so."""
    total, per_epoch = s["total_steps"], s["steps_per_epoch"]
    if not total or not per_epoch:
        return [["optimizer steps", str(s["step"])], ["epochs", str(s["epoch"])]]
    steps = f"{s['step']} of {total} planned" + (" (stopped early: --max-steps)" if s["step"] < total else "")
    return [["optimizer steps", steps], ["epochs", f"{s['step'] / per_epoch:.3g} of {total // per_epoch}"]]


def comparison(run_dirs: list[Path]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) comparing the final validation metrics, best metric and throughput of several runs."""
    summaries = [run_summary(Path(d)) for d in run_dirs]
    keys: list[str] = []
    for s in summaries:
        keys += [k for k, v in s["val"].items() if k not in keys and not isinstance(v, list)]
    rows = [[f"{k} (last evaluation)"] + [_fmt(s["val"].get(k)) for s in summaries] for k in keys]
    rows += [["best (best.safetensors)", *[_best(s) for s in summaries]],
             ["steps", *[str(s["step"]) for s in summaries]],
             ["samples/s", *[_fmt(s["samples_per_s"], 1) for s in summaries]]]
    return ["metric", *[f"{s['name']} ({s['task']})" for s in summaries]], rows


def _best(summary: dict) -> str:
    """`miou 0.7252`: a run's best value, named (runs of several tasks sit side by side)."""
    return "-" if summary["best"] is None else f"{summary['best_metric']} {_fmt(summary['best'])}"


def write_report(blocks: list[Block], out_dir: Path, name: str = REPORT_NAME) -> tuple[Path, Path]:
    """Write OUT_DIR/NAME.md and OUT_DIR/NAME.html."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, page = out_dir / f"{name}.md", out_dir / f"{name}.html"
    write_atomic(md, to_markdown(blocks, out_dir))
    write_atomic(page, to_html(blocks, out_dir))
    return md, page


def write_run_report(run_dir: Path) -> Path:
    """RUN_DIR/report.md and report.html; returns the Markdown path."""
    return write_report(run_report_blocks(run_dir), run_dir)[0]


def to_markdown(blocks: list[Block], base: Path) -> str:
    out = []
    for b in blocks:
        if b.kind == "heading":
            out.append(f"{'#' * b.level} {b.text}")
        elif b.kind == "text":
            out.append(b.text)
        elif b.kind == "table":
            lines = ["| " + " | ".join(b.header) + " |", "|" + "---|" * len(b.header)]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif b.kind == "image":
            out.append(f"![{b.text}]({_relative(b.path, base)})")
        elif b.kind == "code":
            out.append(f"```toml\n{b.text.rstrip()}\n```")
        elif b.kind == "runs":
            out.append(f"{b.text} " + ", ".join(f"[{name}]({_relative(Path(d) / REPORT_MD, base)})"
                                                for name, d in b.rows))
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[Block], base: Path) -> str:
    """One self-contained page (pictures inlined); links to other files are relative to `base`, its folder."""
    body = []
    for b in blocks:
        if b.kind == "heading":
            body.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif b.kind == "text":
            body.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif b.kind == "image":
            data = base64.b64encode(b.path.read_bytes()).decode()
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.text)}">'
                        f"<figcaption>{html.escape(b.text)}</figcaption></figure>")
        elif b.kind == "code":
            body.append(f"<pre>{html.escape(b.text)}</pre>")
        elif b.kind == "runs":
            links = ", ".join(f'<a href="{html.escape(_relative(Path(d) / REPORT_HTML, base))}">{html.escape(name)}'
                              "</a>" for name, d in b.rows)
            body.append(f"<p>{_inline(b.text)} {links}</p>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}img{max-width:100%}"
             "pre{background:#f4f4f4;padding:1em;overflow:auto}")
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>" \
           f"{''.join(body)}</body></html>\n"


def _inline(text: str) -> str:
    """Markdown inline text (`code`, links, emphasis) as HTML; raw HTML in it is escaped, not passed through."""
    from markdown_it import MarkdownIt  # rich's Markdown parser: installed with rich

    return MarkdownIt("commonmark", {"html": False}).renderInline(text)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(base).resolve()))
    except ValueError:
        return str(Path(path).resolve())


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, list):
        shown = ", ".join(_fmt(v, 3) for v in value[:12])
        return f"[{shown}{', ...' if len(value) > 12 else ''}]"
    return str(value)
