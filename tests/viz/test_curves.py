"""Training curves: fractions on a fixed [0, 1] axis with the chance level, labelled axes, whole steps as ticks,
per-class IoU in the mask palette's colours (values read back from the matplotlib figure)."""

from matplotlib.colors import to_rgba

from dlcvkit.data.masks import CLASS_NAMES, PALETTE
from dlcvkit.viz.curves import curves_figure, plot_curves

# 3 steps of training, 2 evaluations with accuracy near chance (0.095..0.115 for 10 classes)
CLS = [{"step": s, "epoch": 1, "loss": 2.3 - 0.1 * s, "lr": 0.1} for s in (1, 2, 3)]
CLS += [{"step": 2, "epoch": 1, "split": "val", "acc": 0.095}, {"step": 3, "epoch": 2, "split": "val", "acc": 0.115}]
IOU = [0.9, 0.1, 0.5, 0.3, 0.7, 0.0]
SEG = [{"step": 1, "loss": 1.0}, {"step": 3, "split": "val", "miou": 0.2, "pixel_acc": 0.5,
                                   **{f"iou_{n.lower()}": 0.0 for n in CLASS_NAMES[:6]}},
       {"step": 5, "split": "val", "miou": 0.4, "pixel_acc": 0.6,
        **{f"iou_{n.lower()}": v for n, v in zip(CLASS_NAMES, IOU)}}]


def _axes(fig):
    return {ax.get_title(): ax for ax in fig.axes if ax.get_visible() and ax.axison}


def test_accuracy_is_drawn_on_0_1_with_a_dashed_chance_line_and_labelled_axes():
    axes = _axes(curves_figure(CLS, num_classes=10))
    acc = axes["val acc"]
    assert acc.get_ylim() == (0.0, 1.0)  # not zoomed to 0.095..0.115
    chance = [line for line in acc.get_lines() if line.get_linestyle() == "--"]
    assert len(chance) == 1 and list(chance[0].get_ydata()) == [0.1, 0.1]
    assert chance[0].get_label() == "chance (1/10)"
    assert (acc.get_xlabel(), acc.get_ylabel()) == ("optimizer step", "accuracy")
    assert (axes["train loss"].get_ylabel(), axes["train lr"].get_ylabel()) == ("loss", "learning rate")
    assert axes["train loss"].get_ylim() != (0.0, 1.0)  # a loss keeps its own range


def test_step_ticks_are_whole_numbers_also_for_a_single_step():
    single = [{"step": 4, "loss": 3.8}, {"step": 4, "split": "val", "acc": 0.08}]  # a run cut by --max-steps
    for records in (CLS, single):
        for title, ax in _axes(curves_figure(records, num_classes=10)).items():
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), (title, ticks)
            assert 4 in ticks or records is CLS


def test_without_a_class_count_there_is_no_chance_line():
    acc = _axes(curves_figure(CLS))["val acc"]
    assert acc.get_ylim() == (0.0, 1.0) and not [l for l in acc.get_lines() if l.get_linestyle() == "--"]


def test_per_class_iou_is_drawn_in_the_mask_palette_as_curves_and_last_bars():
    axes = _axes(curves_figure(SEG))
    palette = [tuple(float(c) / 255 for c in PALETTE[i]) + (1.0,) for i in range(6)]
    curves = axes["val iou_*"]
    assert [to_rgba(line.get_color()) for line in curves.get_lines()] == palette
    assert curves.get_ylim() == (0.0, 1.0) and curves.get_ylabel() == "IoU"
    bars = axes["val IoU per class, last evaluation (step 5)"]
    assert [tuple(p.get_facecolor()) for p in bars.patches] == palette
    assert [p.get_height() for p in bars.patches] == IOU
    assert [t.get_text() for t in bars.get_xticklabels()] == [n.lower() for n in CLASS_NAMES[:6]]
    assert axes["val miou"].get_ylim() == (0.0, 1.0) and axes["val miou"].get_ylabel() == "mean IoU"


def test_plot_curves_writes_a_png(tmp_path):
    assert plot_curves(SEG, tmp_path / "c.png") == tmp_path / "c.png"
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_curves([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
