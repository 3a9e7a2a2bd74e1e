"""Training curves of a run from its metrics.jsonl: loss, learning rate and validation metrics (matplotlib).

Fractions (accuracy, IoU) are drawn on a fixed [0, 1] axis, accuracy with its chance level dashed, so that noise
around chance does not look like learning; per-class IoU is drawn in the mask palette's colours, as curves and
as bars of the last evaluation."""

from __future__ import annotations

from pathlib import Path

from matplotlib import patheffects
from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend
from matplotlib.ticker import MaxNLocator

from dlcvkit.data.masks import CLASS_NAMES, PALETTE
from dlcvkit.diskfull import writing

# per-class IoU key (as the segmentation task logs it) -> the class's mask colour
CLASS_COLOURS = {f"iou_{name.lower()}": tuple((PALETTE[i] / 255).tolist()) for i, name in enumerate(CLASS_NAMES)}
# light palette colours (yellow, white, cyan) stay visible on white: every palette line and bar gets a dark edge
_OUTLINE = [patheffects.withStroke(linewidth=3, foreground="dimgrey")]


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


def is_accuracy(key: str) -> bool:
    """Whether a metric is a fraction of correct samples (acc, knn_acc, pixel_acc, ...)."""
    return key == "acc" or key.endswith("_acc")


def is_fraction(key: str) -> bool:
    """Whether a metric lies in [0, 1] by definition: accuracies and IoUs."""
    return is_accuracy(key) or key == "miou" or key.startswith("iou_")


def curves_figure(records: list[dict], num_classes: int | None = None) -> Figure | None:
    """The training loss, the LR and the validation metrics over optimizer steps, one panel each (metrics
    sharing a prefix, iou_urban, iou_water, ..., share one), and the last per-class IoU as bars; accuracy
    panels show chance, 1 / `num_classes`, when given. None if there is nothing to draw."""
    train, val = scalar_series(records, None), scalar_series(records, "val")
    panels: dict[str, dict] = {f"train {k}": {k: train[k]} for k in ("loss", "lr") if k in train}
    prefixes = [k.split("_")[0] for k in val if "_" in k]
    for key, series in val.items():
        prefix = key.split("_")[0]
        title = f"val {prefix}_*" if "_" in key and prefixes.count(prefix) >= 3 else f"val {key}"
        panels.setdefault(title, {})[key] = series
    class_iou = {k: values[-1] for k, (_, values) in val.items() if k in CLASS_COLOURS}
    if not panels:
        return None
    count = len(panels) + bool(class_iou)
    cols = min(3, count)
    rows = -(-count // cols)
    fig = Figure(figsize=(4.4 * cols, 3.1 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (title, lines) in zip(axes.flat, panels.items()):
        _draw_curves(ax, title, lines, num_classes)
    if class_iou:
        _draw_class_iou(list(axes.flat)[len(panels)], class_iou, max(val[k][0][-1] for k in class_iou))
    for ax in list(axes.flat)[count:]:
        ax.axis("off")
    return fig


def _draw_curves(ax, title: str, lines: dict, num_classes: int | None) -> None:
    """One panel: its series over optimizer steps, labelled axes, whole steps as ticks."""
    for label, (steps, values) in lines.items():
        colour = CLASS_COLOURS.get(label)
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=label, color=colour,
                path_effects=_OUTLINE if colour else None)
    keys = list(lines)
    if all(is_fraction(k) for k in keys):
        ax.set_ylim(0, 1)
        if num_classes and all(is_accuracy(k) for k in keys):
            ax.axhline(1 / num_classes, color="grey", linestyle="--", linewidth=1,
                       label=f"chance (1/{num_classes})")
    if len(ax.get_legend_handles_labels()[0]) > 1:
        ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("optimizer step", fontsize=8)
    ax.set_ylabel(_quantity(keys), fontsize=8)
    steps = [step for series, _ in lines.values() for step in series]
    if max(steps) - min(steps) < 2:  # a step or two: autoscaling would span less than one whole step
        ax.set_xlim(min(steps) - 1, max(steps) + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)


def _quantity(keys: list[str]) -> str:
    """The y-axis label of a panel of these metrics."""
    if all(k.startswith("iou_") for k in keys):
        return "IoU"
    if len(keys) == 1:
        return {"lr": "learning rate", "miou": "mean IoU", "acc": "accuracy"}.get(keys[0], keys[0].replace("_", " "))
    return "value"


def _draw_class_iou(ax, class_iou: dict[str, float], step: int) -> None:
    """Bars of the per-class IoU of the last evaluation, in the classes' mask colours."""
    names = [k.removeprefix("iou_") for k in class_iou]
    ax.bar(names, list(class_iou.values()), color=[CLASS_COLOURS[k] for k in class_iou], edgecolor="dimgrey")
    ax.set_ylim(0, 1)
    ax.set_title(f"val IoU per class, last evaluation (step {step})", fontsize=10)
    ax.set_ylabel("IoU", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.tick_params(axis="x", rotation=30)
    ax.grid(alpha=0.3, axis="y")


def plot_curves(records: list[dict], out: Path, num_classes: int | None = None) -> Path | None:
    """`curves_figure` written as a PNG at `out` (None if there is nothing to draw)."""
    fig = curves_figure(records, num_classes)
    if fig is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    with writing(out, partial=out):  # a full disk leaves no half picture
        fig.savefig(out, dpi=110)
    return out
