"""`dlcvkit demo` end to end (smoke size) and the run reports it is made of."""

import json
import socket
import subprocess
import sys

import pytest

from tests.cli_runner import dlcvkit


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    dlcvkit("demo", "--quick", "--max-steps", 1, "--out", out, timeout=600)
    return out


def _last_val(run):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("split") == "val"][-1]


@pytest.mark.slow  # the whole demo: a minute of CPU
def test_demo_report_has_every_part(demo):
    report = (demo / "report.md").read_text()
    for section in ("1. BYOL", "2. Office-Home fine-tuning", "3. Segmentation", "4. Classification", "Time per step"):
        assert section in report
    rows = [line for line in report.splitlines() if line.startswith(("| A |", "| B |", "| C |", "| D |", "| E |"))]
    assert len(rows) == 5
    assert "| fcn32s |" in report and "| fcn8s |" in report
    # the segmentation table shows what `eval seg` computed on the predicted masks
    m = json.loads((demo / "miou_fcn8s.json").read_text())
    assert f"{m['mean_iou']:.4f}" in report
    page = (demo / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2  # pictures inlined: one self-contained file
    monitor = _last_val(demo / "runs" / "byol")  # BYOL watched by the kNN monitor (with --max-steps 1: once)
    assert "The kNN monitor during pre-training" in report and f"{monitor['epoch']}: {monitor['knn_acc']:.4f}" in report


@pytest.mark.slow  # the whole demo: a minute of CPU
def test_demo_wrote_course_format_outputs(demo):
    predictions = sorted(p.name for p in (demo / "predictions" / "fcn8s").iterdir())
    labels = sorted(p.name for p in (demo / "data" / "seg_val").glob("*_mask.png"))
    assert predictions == labels
    assert (demo / "runs" / "byol" / "backbone.safetensors").is_file()
    assert (demo / "runs" / "finetune" / "settings.csv").read_text().count("\n") == 6


@pytest.mark.slow  # the whole demo: a minute of CPU
def test_every_run_has_a_report_with_its_final_metrics(demo):
    run = demo / "runs" / "fcn8s"
    text = (run / "report.md").read_text()
    assert f"| miou | {_last_val(run)['miou']:.4f} |" in text
    assert (run / "curves.png").stat().st_size > 0 and "![curves](curves.png)" in text
    assert "[model]" in text  # the resolved recipe


@pytest.mark.slow  # the whole demo: a minute of CPU
def test_report_compares_runs(demo, tmp_path):
    a, b = demo / "runs" / "fcn32s", demo / "runs" / "fcn8s"
    proc = dlcvkit("report", a, b, "--out", tmp_path)
    compare = (tmp_path / "compare.md").read_text()
    row = next(line for line in compare.splitlines() if line.startswith("| miou (last evaluation) |"))
    assert row == f"| miou (last evaluation) | {_last_val(a)['miou']:.4f} | {_last_val(b)['miou']:.4f} |"
    assert "fcn32s (segment)" in proc.stdout


def test_report_of_a_folder_that_is_not_a_run(tmp_path):
    proc = dlcvkit("report", tmp_path, check=False)
    assert proc.returncode == 2 and "not a dlcvkit run folder" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_demo_runs_under_accelerate_launch_on_two_processes(tmp_path):
    """The README's 2-process form (a real gloo group on a CPU) writes the same report, saying 2 processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
         str(port), "-m", "dlcvkit", "demo", "--quick", "--max-steps", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert "on 2 processes" in report
    rows = [line for line in report.splitlines() if line.startswith(("| A |", "| B |", "| C |", "| D |", "| E |"))]
    assert len(rows) == 5 and "| fcn8s |" in report
    assert proc.stdout.count("[demo] done:") == 1  # the main process reports, the other only trains
