"""`dlcvkit bench`: the harness (records, speed-ups, the equal-results check before timing) and every subcommand
on toy sizes writing valid JSON. No timing is asserted: the figures of a shared CPU mean nothing here."""

import json
import subprocess
import sys

import pytest
import timm
import torch
from sklearn.metrics import confusion_matrix

from dlcvkit.bench.ema import check_same_targets, ema_contenders
from dlcvkit.bench.miou import bench_miou, check_same_confusion, confusion_contenders, segmentation_batch
from dlcvkit.bench.report import goal_rows
from dlcvkit.bench.timing import ResultMismatch, add_speedups, measure, record
from dlcvkit.bench.train import Repeated
from dlcvkit.cli import main

REQUIRED = {"bench", "case", "contender", "samples_per_s", "ms_median", "ms_min", "ms_max", "speedup_vs", "speedup",
            "repeats", "items", "machine"}
TINY = "test_resnet"  # timm's 0.5M-parameter ResNet
CPU = torch.device("cpu")


# ------------------------------------------------------------------------------------------------ the harness


def test_measure_runs_warmup_then_times_each_repeat():
    calls = []
    timing = measure(lambda: calls.append(1), items=5, repeats=3, warmup=2, device=CPU)
    assert len(calls) == 5 and len(timing.seconds) == 3 and timing.items == 5
    r = record("x", "case", "a", timing, size=7)
    assert r["repeats"] == 3 and r["size"] == 7
    assert r["ms_min"] <= r["ms_median"] <= r["ms_max"]
    assert r["samples_per_s"] == pytest.approx(5 / timing.median)


def _timed(bench, case, contender, ms, items=10):
    r = record(bench, case, contender, None)
    return r | {"ms_median": ms, "ms_min": ms, "ms_max": ms, "items": items, "samples_per_s": 1e3 * items / ms}


def test_speedup_is_the_ratio_of_the_reference_median_to_the_contenders():
    records = [_timed("miou", "a", "torchmetrics", 40.0), _timed("miou", "a", "dlcvkit", 10.0),
               _timed("miou", "b", "dlcvkit", 5.0),  # no reference in its case
               _timed("other", "a", "torchmetrics", 1.0),  # a bench without a reference
               _timed("aug", "a", "torchvision", 30.0, items=20), _timed("aug", "a", "kornia", 10.0, items=10)]
    add_speedups(records, {"miou": "torchmetrics", "aug": "torchvision"})
    assert records[0]["speedup"] == 1.0 and records[1]["speedup"] == 4.0
    assert records[1]["speedup_vs"] == "torchmetrics"
    assert records[2]["speedup"] is None and records[3]["speedup"] is None
    assert records[5]["speedup"] == pytest.approx(1.5)  # per sample: 30 ms / 20 vs 10 ms / 10


def test_goals_compare_the_right_ratio():
    ema = _timed("ema", "r50", "dlcvkit", 8.0) | {"speedup": 1.25}
    miou = _timed("miou", "m", "dlcvkit", 1.0) | {"speedup": 9.9}
    train = _timed("train", "t", "dlcvkit", 1.0) | {"speedup": 0.95, "overhead_pct": 5.3}
    rows = {r[0]: r for r in goal_rows([ema, miou, train])}
    assert rows["ema"][3] == pytest.approx(0.8) and rows["ema"][4]  # our time is 0.8 of timm's: met
    assert not rows["miou"][4] and not rows["train"][4]


def test_confusion_contenders_agree_with_sklearn_and_a_wrong_one_is_rejected_before_timing():
    pred, target = segmentation_batch(2, 32, 7, CPU)
    contenders = confusion_contenders(7, CPU)
    check_same_confusion(contenders, pred, target)
    update, matrix = contenders["dlcvkit"]()
    update(pred, target)
    expected = confusion_matrix(target.flatten().numpy(), pred.flatten().numpy(), labels=range(7))
    assert torch.equal(matrix(), torch.from_numpy(expected))

    calls = []

    def transposed():  # rows predictions, columns labels: the classic mistake
        update, matrix = contenders["dlcvkit"]()
        return lambda p, t: (calls.append(1), update(p, t)), lambda: matrix().T

    with pytest.raises(ResultMismatch, match="transposed"):
        bench_miou(batch=2, size=32, classes=7, device=CPU, repeats=2, warmup=0,
                   contenders=contenders | {"transposed": transposed})
    assert calls == [1]  # checked once, never timed


def test_ema_contenders_agree_and_a_wrong_one_is_rejected():
    torch.manual_seed(0)
    online = timm.create_model(TINY)
    target = timm.create_model(TINY)
    contenders = ema_contenders(online, target, tau=0.9)
    check_same_targets(contenders)
    xi0 = dict(target.named_parameters())["fc.weight"].detach()
    theta = dict(online.named_parameters())["fc.weight"].detach()
    ours = dict(contenders["dlcvkit"][1].named_parameters())["fc.weight"]
    torch.testing.assert_close(ours, 0.9 * xi0 + 0.1 * theta)  # one update by hand

    wrong = timm.create_model(TINY)
    wrong.load_state_dict(target.state_dict())

    def swapped():  # tau and 1 - tau exchanged
        with torch.no_grad():
            for xi, th in zip(wrong.parameters(), online.parameters()):
                xi.lerp_(th, 0.9)

    with pytest.raises(ResultMismatch, match="swapped"):
        check_same_targets(ema_contenders(online, target, tau=0.9) | {"swapped": (swapped, wrong)})


def test_repeated_dataset_cycles():
    data = Repeated([{"i": 0}, {"i": 1}, {"i": 2}], 7)
    assert len(data) == 7 and [data[k]["i"] for k in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_torchvision_and_kornia_views_deliver_the_same_kind_of_output():
    from dlcvkit.tasks.byol import byol_views
    from dlcvkit.bench.augment import TwoViewSamples

    images = torch.randint(0, 256, (4, 3, 24, 24), dtype=torch.uint8)
    view1, view2 = TwoViewSamples(images, 4, 24)[1]
    k1, k2 = byol_views("paper", 24)(images.float() / 255)
    for tv, k in ((view1, k1), (view2, k2)):
        assert tv.shape == k[1].shape and tv.dtype == k.dtype == torch.float32
        assert 0 <= float(tv.min()) and float(tv.max()) <= 1


# ------------------------------------------------------------------------------------------------ the commands


def _run(tmp_path, *args):
    """`dlcvkit bench ARGS --json FILE` in this process; the records."""
    path = tmp_path / f"{args[0]}.json"
    with pytest.raises(SystemExit) as exited:
        main(["bench", *map(str, args), "--threads", "1", "--json", str(path)])
    assert exited.value.code == 0
    return json.loads(path.read_text())


def _check_records(records, benches):
    assert {r["bench"] for r in records} == set(benches)
    for r in records:
        assert REQUIRED <= r.keys()
        if r["ms_median"] is None:  # only torch.compile may fail, and then says why
            assert r["contender"] == "kornia_compiled" and r["error"]
            continue
        assert 0 < r["ms_min"] <= r["ms_median"] <= r["ms_max"]
        assert r["samples_per_s"] == pytest.approx(1e3 * r["items"] / r["ms_median"])
        assert r["machine"]["threads"] >= 1 and r["machine"]["versions"]["torch"] == torch.__version__
    reference = {"augment": "torchvision", "train": "bare", "ema": "timm", "miou": "torchmetrics",
                 "loader": "dlcvkit decode", "infer": "forward"}
    for r in records:
        ref = next((x for x in records if x["case"] == r["case"] and x["contender"] == reference.get(r["bench"])),
                   None)
        if ref is None or r["ms_median"] is None:
            assert r["speedup"] is None
            continue
        assert r["speedup_vs"] == ref["contender"]
        assert r["speedup"] == pytest.approx((ref["ms_median"] / ref["items"]) / (r["ms_median"] / r["items"]))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("bench_cache")


def test_bench_augment(tmp_path):
    records = _run(tmp_path, "augment", "--size", 32, "--batch", 4, "--workers", 1, "--batches-per-repeat", 1,
                   "--repeats", 2, "--warmup", 0)
    _check_records(records, ["augment"])
    assert [r["contender"] for r in records] == ["kornia", "torchvision"]


def test_bench_train_reports_overhead_and_data_wait(tmp_path, cache):
    records = _run(tmp_path, "train", "--task", "cls", "--model", TINY, "--img-size", 32, "--batch", 4,
                   "--interval", 2, "--repeats", 2, "--workers", 1, "--cache", cache)
    _check_records(records, ["train"])
    bare, engine, loaded = records
    assert [r["contender"] for r in records] == ["bare", "dlcvkit", "dlcvkit_loader"]
    assert engine["repeats"] == loaded["repeats"] == 2  # intervals read back from the engine's metrics.jsonl
    assert engine["overhead_pct"] == pytest.approx(100 * (engine["ms_median"] / bare["ms_median"] - 1))
    assert 0 <= engine["data_wait"] < 1 and 0 <= loaded["data_wait"] < 1
    assert not list(cache.glob("run_*"))  # scratch runs are removed


def test_bench_ema(tmp_path):
    records = _run(tmp_path, "ema", "--model", TINY, "--repeats", 2, "--warmup", 0)
    _check_records(records, ["ema"])
    assert [r["contender"] for r in records] == ["dlcvkit", "timm", "naive"]
    assert records[0]["numel"] == sum(t.numel() for t in timm.create_model(TINY).state_dict().values())


def test_bench_miou(tmp_path, cache):
    records = _run(tmp_path, "miou", "--batch", 2, "--size", 64, "--masks", 3, "--repeats", 2, "--eval-repeats", 2,
                   "--warmup", 0, "--cache", cache)
    _check_records(records, ["miou", "eval_seg"])
    assert records[-1]["items"] == 3 and len(list((cache / "eval_seg_3x64" / "pred").glob("*_mask.png"))) == 3


def test_bench_infer(tmp_path, cache):
    records = _run(tmp_path, "infer", "--model", TINY, "--images", 2, "--img-size", 64, "--batch", 2, "--workers", 0,
                   "--repeats", 2, "--warmup", 0, "--cache", cache)
    _check_records(records, ["infer"])
    assert [r["contender"] for r in records] == ["dlcvkit", "forward", "onnxruntime"]
    assert records[0]["speedup_vs"] == "forward" and records[0]["speedup"] > 0


def test_bench_infer_cls_times_predict_cls_against_its_forward_pass(tmp_path, cache):
    records = _run(tmp_path, "infer", "--task", "cls", "--model", TINY, "--images", 3, "--img-size", 32, "--batch",
                   2, "--workers", 0, "--repeats", 1, "--warmup", 0, "--cache", cache)
    _check_records(records, ["infer"])
    assert [(r["task"], r["contender"], r["items"]) for r in records] == [
        ("cls", "dlcvkit", 3), ("cls", "forward", 3), ("cls", "onnxruntime", 3)]
    assert records[0]["speedup_vs"] == "forward"


@pytest.mark.slow
def test_bench_all_smoke_as_a_user_runs_it(tmp_path):
    path = tmp_path / "all.json"
    proc = subprocess.run([sys.executable, "-m", "dlcvkit", "bench", "all", "--smoke", "--threads", "1",
                           "--cache", str(tmp_path / "cache"), "--json", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads(path.read_text())
    _check_records(records, ["augment", "train", "ema", "miou", "eval_seg", "infer", "loader"])
    assert {r["case"].split()[0] for r in records if r["bench"] == "train"} == {"byol", "cls", "seg"}
    assert "goals" in proc.stdout and "threads" in proc.stdout
