"""Training curves of a run from its metrics.jsonl: loss, learning rate and validation metrics (matplotlib)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def scalar_series(records: list[dict], split: str | None) -> dict[str, tuple[list[int], list[float]]]:
    """{key: (steps, values)} of the numeric values of the records of one split (None = training records)."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
        if record.get("split") != split:
            continue
        for key, value in record.items():
            if key in ("step", "epoch", "split") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            steps, values = series.setdefault(key, ([], []))
            steps.append(record["step"])
            values.append(value)
    return series


def plot_curves(records: list[dict], out: Path) -> Path | None:
    """One PNG with the training loss, the LR and the validation metrics over optimizer steps (None if empty).
    Metrics sharing a prefix (iou_urban, iou_water, ...) share a panel, so per-class curves stay readable."""
    train, val = scalar_series(records, None), scalar_series(records, "val")
    panels: dict[str, dict] = {f"train {k}": {k: train[k]} for k in ("loss", "lr") if k in train}
    prefixes = [k.split("_")[0] for k in val if "_" in k]
    for key, series in val.items():
        prefix = key.split("_")[0]
        title = f"val {prefix}_*" if "_" in key and prefixes.count(prefix) >= 3 else f"val {key}"
        panels.setdefault(title, {})[key] = series
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.1 * rows), squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels.items()):
        for label, (steps, values) in lines.items():
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=label)
        if len(lines) > 1:
            ax.legend(fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
