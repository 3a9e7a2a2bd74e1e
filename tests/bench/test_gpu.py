"""`dlcvkit bench gpu`, the check for a CUDA machine, run here as its dry run (toy sizes on the CPU) so that it
cannot rot: every part runs or says why not, the JSON and the Markdown hold every part, a failing part and a
part over its time limit cost only themselves. No GPU figure is asserted (there is no GPU here)."""

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest

from dlcvkit.bench import gpu
from dlcvkit.bench.gpu import PARTS, SIZES
from dlcvkit.config import apply_override
from dlcvkit.tasks.registry import task_classes
from tests.cli_runner import dlcvkit_here

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "gpu_check.sh"
# on a CPU: no sync counting (CUDA only), no fp16 (refused), no second GPU
CPU_SKIPS = {"host_syncs": "needs CUDA", "fp16_scaler": "needs a GPU", "two_gpus": "needs 2 GPUs"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("gpu_check_cache")


def _check(capsys, tmp_path, cache, *args) -> tuple[int, str, dict, str]:
    """`dlcvkit bench gpu --size tiny --device cpu ARGS` in this process: (exit code, stderr, JSON, Markdown)."""
    json_path, md_path = tmp_path / "check.json", tmp_path / "check.md"
    code, _, err = dlcvkit_here(capsys, "bench", "gpu", "--size", "tiny", "--device", "cpu", "--threads", 1,
                                "--cache", cache, "--json", json_path, "--md", md_path, *args)
    return code, err, json.loads(json_path.read_text()), md_path.read_text()


def test_dry_run_records_every_part_with_numbers_or_a_reason(capsys, tmp_path, cache):
    # in this process (no child per part) and without torch.compile (minutes on this CPU: the slow test has it)
    code, err, check, md = _check(capsys, tmp_path, cache, "--in-process", "--budget", 0, "--skip", "byol_compile")
    assert code == 0, err
    parts = {p["name"]: p for p in check["parts"]}
    assert list(parts) == list(PARTS)
    skipped = {name: p["reason"] for name, p in parts.items() if p["status"] == "skipped"}
    assert skipped.keys() == CPU_SKIPS.keys() | {"byol_compile"}
    for name, words in CPU_SKIPS.items():
        assert words in skipped[name]
    assert "not selected" in skipped["byol_compile"]
    ok = [p for p in parts.values() if p["status"] == "ok"]
    assert len(ok) == len(PARTS) - 4
    for part in ok:
        assert part["seconds"] > 0 and part["peak_mem_mb"] is None  # no GPU memory on the CPU
        for r in part.get("records", []):
            assert r["samples_per_s"] > 0 and r["ms_min"] <= r["ms_median"] <= r["ms_max"]
        assert part.get("records") or part.get("checks")
    # the CPU's own exactness: a resumed run is bit-identical, the "device" (the CPU) prints the CPU's digits
    for name in ("resume_cls", "resume_seg"):
        assert parts[name]["checks"]["bit_identical"] and parts[name]["checks"]["max_abs_difference"] == 0
    assert parts["eval_gpu_cpu"]["checks"]["same_printout"]
    assert "mean_iou: " in parts["eval_gpu_cpu"]["checks"]["printout_cpu"]
    engine = next(r for r in parts["byol_step"]["records"] if r["contender"] == "dlcvkit")
    assert engine["speedup_vs"] == "bare" and engine["speedup"] > 0
    assert parts["predict_fcn8s"]["checks"]["course_seconds"] == pytest.approx(
        257 / next(r for r in parts["predict_fcn8s"]["records"] if r["contender"] == "dlcvkit")["samples_per_s"])
    # the Markdown: one summary row and one section per part; ok rows carry figures, the others their reason
    for name, part in parts.items():
        row = next(line for line in md.splitlines() if line.startswith(f"| {name} | "))
        assert f"| {part['status']} |" in row
        result = re.split(r"(?<!\\)\|", row)[3]  # cells are split at unescaped pipes
        assert re.search(r"\d", result) if part["status"] == "ok" else part["reason"][:30] in result
        assert f"## {name}: " in md
    assert "Dry run" in md


def test_a_failing_part_is_recorded_and_the_others_are_kept(capsys, tmp_path, cache, monkeypatch):
    def broken(cfg, device, cache):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setitem(PARTS, "augment", dataclasses.replace(PARTS["augment"], run=broken))
    code, err, check, md = _check(capsys, tmp_path, cache, "--in-process", "--only", "augment", "--only",
                                  "predict_fcn8s")
    assert code == 1
    assert err.strip().splitlines()[-1] == "dlcvkit: bench gpu: 1 part failed: augment"
    parts = {p["name"]: p for p in check["parts"]}
    assert parts["augment"]["status"] == "failed"
    assert parts["augment"]["reason"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert parts["predict_fcn8s"]["status"] == "ok" and parts["predict_fcn8s"]["records"]
    assert "an illegal memory access" in md


def test_a_part_over_its_time_limit_is_killed_and_recorded(capsys, tmp_path, cache):
    # the part runs in a child process (as on the GPU machine); 1 s is less than its start-up
    code, err, check, _ = _check(capsys, tmp_path, cache, "--only", "byol_step", "--timeout", 1)
    assert code == 0, err
    part = next(p for p in check["parts"] if p["name"] == "byol_step")
    assert part["status"] == "skipped" and part["reason"] == "timed out after 1 s"
    assert not list(cache.glob("part_*"))  # the child's scratch folder is gone


def test_budget_skips_the_parts_that_no_longer_fit(capsys, tmp_path, cache):
    code, _, check, _ = _check(capsys, tmp_path, cache, "--in-process", "--only", "fp16_scaler", "--budget", 1)
    assert code == 0
    part = next(p for p in check["parts"] if p["name"] == "fp16_scaler")
    assert part["status"] == "skipped" and "time budget (1 s, --budget)" in part["reason"]


@pytest.mark.parametrize("args, words", [
    (["--size", "full", "--device", "cpu"], "--size full is for a CUDA GPU"),
    (["--size", "tiny", "--device", "cpu", "--only", "byol_stp"], "--only byol_stp: no such part"),
])
def test_bad_options_are_one_line_errors(capsys, args, words):
    code, _, err = dlcvkit_here(capsys, "bench", "gpu", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("dlcvkit: error: ") and words in lines[0]


@pytest.mark.parametrize("size", SIZES)
def test_every_recipe_override_of_the_check_is_a_valid_key(size, tmp_path):
    # the full-size recipes only run on a GPU: a typo there must fail here
    cfg = SIZES[size]
    lists = [(cfg[n]["task"], cfg[n]["overrides"]) for n in ("resume_cls", "resume_seg")]
    lists += [("seg", cfg["eval_gpu_cpu"]["overrides"]), ("cls", cfg["fp16_scaler"]["overrides"]),
              ("byol", cfg["two_gpus"]["overrides"])]
    lists += [(task, [*items, *gpu._BUSY]) for task, items in cfg["host_syncs"]["tasks"].items()]
    for task, overrides in lists:
        recipe = task_classes(gpu.TASKS[task])[0]()
        for item in overrides:
            apply_override(recipe, item)


@pytest.mark.slow
def test_the_whole_dry_run_as_the_script_runs_it(tmp_path):
    # every part in its own process, torch.compile included
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(tmp_path), "--threads", "1", "--cache",
                           str(tmp_path / "cache")], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {p["name"]: p["status"] for p in check["parts"]}
    assert status == {name: "skipped" if name in CPU_SKIPS else "ok" for name in PARTS}
    assert "## byol_compile: " in (tmp_path / "gpu_check.md").read_text()
