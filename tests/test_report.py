"""Run reports: best and final metrics named apart, Markdown code and links rendered in report.html, the chance
level of a classifier's accuracy in its curves."""

import re

import pytest

from dlcvkit.cli import main
from dlcvkit.report import Block, comparison, run_report_blocks, to_html, write_report

RECIPE = """task = "classify"
[data]
img_size = 32
batch_size = 4
num_workers = 0
[model]
backbone = "test_resnet"
num_classes = 2
[train]
epochs = 2
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, cls_data):
    """A classify run of 2 epochs x 2 steps on 8 images of 2 classes, validated after each epoch."""
    root = tmp_path_factory.mktemp("report")
    (root / "cls.toml").write_text(RECIPE)
    with pytest.raises(SystemExit) as exited:  # the CLI in this process (a module fixture has no capsys)
        main([str(a) for a in ("classify", "-r", root / "cls.toml", "--data", cls_data, "--val", cls_data,
                               "--out", root / "run")])
    assert exited.value.code == 0
    return root / "run"


def test_best_and_final_metrics_are_named_apart(run):
    report = (run / "report.md").read_text()
    assert re.search(r"^\| best validation acc \| \d\.\d{4} \(epoch \d+, step \d+: best\.safetensors\) \|$", report, re.M)
    assert "## Final validation metrics (the last evaluation, model.safetensors)" in report
    header, rows = comparison([run, run])
    labels = [row[0] for row in rows]
    assert "acc (last evaluation)" in labels and "best (best.safetensors)" in labels
    best = rows[labels.index("best (best.safetensors)")]
    assert re.fullmatch(r"acc \d\.\d{4}", best[1])


def test_the_curves_show_chance_for_the_recipes_classes(run, monkeypatch):
    import dlcvkit.viz.curves as curves

    seen, original = [], curves.plot_curves

    def spy(records, out, classes=None):
        seen.append(classes)
        return original(records, out, classes)

    monkeypatch.setattr(curves, "plot_curves", spy)
    run_report_blocks(run)
    assert seen == [2]


def test_html_renders_markdown_code_and_links_each_runs_report(tmp_path, run):
    blocks = [Block("text", "run `dlcvkit demo --quick` then <b>look</b>"),
              Block("table", header=["setting", "note"], rows=[["A", "`--setting A`"]]),
              Block("runs", "Each run's report:", rows=[["cls", run]])]
    md, page = write_report(blocks, tmp_path)
    text = page.read_text()
    assert "<code>dlcvkit demo --quick</code>" in text and "`" not in text
    assert "&lt;b&gt;look&lt;/b&gt;" in text  # raw HTML in the text is shown, not obeyed
    assert "<td><code>--setting A</code></td>" in text
    link = re.search(r'<a href="([^"]+)">cls</a>', text)
    assert link and (tmp_path / link[1]).resolve() == (run / "report.html").resolve()
    assert re.search(r"\[cls\]\(([^)]+)\)", md.read_text())[1].endswith("report.md")
    assert to_html(blocks, tmp_path) == text
