"""Train two tiny classifiers with the CLI, then check eval (1 vs 2 processes, ensembles), predict and t-SNE
against independent in-process references."""

import csv
import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dlcvkit.augment.common import normalize, to_unit
from dlcvkit.bench.infer import classify_recipe, make_run
from dlcvkit.cli import app
from dlcvkit.data.labeled import P1Folder
from dlcvkit.data.synth import synth_cls
from dlcvkit.engine.weights import load_weights, read_state_dict
from dlcvkit.errors import DlcvkitError
from dlcvkit.runs.load import load_run
from dlcvkit.tasks.classify import ClassifyTask
from tests.cli_runner import dlcvkit_here

RECIPE = "demo_cls"  # a shipped recipe, by name
EVAL_BATCH = 8


def _parallel(*commands: list) -> None:
    """Run CLI commands side by side (the machine has 2 cores); fail with the output of any that fails."""
    procs = [subprocess.Popen([sys.executable, "-m", "dlcvkit", *map(str, c)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in commands]
    for command, proc in zip(commands, procs):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"dlcvkit {' '.join(map(str, command))}:\n{out}\n{err}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs on 3 synthetic classes: A (32 px, linear head), B (24 px, MLP head, mixup, model EMA)."""
    root = tmp_path_factory.mktemp("cls")
    synth_cls(root / "train", n=48, size=32, classes=3, seed=0)
    synth_cls(root / "val", n=37, size=32, classes=3, seed=1)  # 37: not a multiple of 2 processes x 8
    common = ["classify", "-r", RECIPE, "--data", root / "train", "--val", root / "val",
              "--set", "model.backbone=test_resnet", "--set", "data.batch_size=8", "--set", "data.num_workers=0",
              "--set", "train.epochs=2", "--set", "aug.preset=flip"]
    _parallel(
        [*common, "--out", root / "a"],
        [*common, "--out", root / "b", "--set", "data.img_size=24", "--set", "model.head=[16]",
         "--set", "model.dropout=0.1", "--set", "aug.mixup=0.4", "--set", "train.model_ema=0.9",
         "--set", "train.seed=1"],
    )
    return root


def _probabilities(run_dir: Path, val: Path, weights: str = "best", ema: bool = False) -> torch.Tensor:
    """Softmax outputs of a run on the val images, in the engine's evaluation batches, computed here."""
    recipe, _, model = load_run(run_dir, weights)
    if ema:
        load_weights(model, read_state_dict(run_dir / "ema.safetensors"), "ema")
    dataset = P1Folder(val, size=recipe.data.img_size)
    out = []
    with torch.no_grad():
        for i in range(0, len(dataset), EVAL_BATCH):
            images = torch.stack([dataset[j]["image"] for j in range(i, min(i + EVAL_BATCH, len(dataset)))])
            out.append(model(normalize(to_unit(images))).softmax(dim=1))
    return torch.cat(out)


def _accuracy(probs: torch.Tensor, labels: list[int]) -> float:
    return int((probs.argmax(dim=1) == torch.tensor(labels)).sum()) / len(labels)


@pytest.fixture(scope="module")
def outputs(runs):
    """Side by side: the ensemble evaluated by 1 process and by 2 (`dlcvkit launch --procs 2`), run B's EMA
    evaluated, and the ensemble's predictions for the val folder (P1 form) and for a shuffled inference CSV."""
    names = sorted(p.name for p in (runs / "val").iterdir())
    order = names[:]
    random.Random(0).shuffle(order)
    with open(runs / "test.csv", "w", newline="") as f:  # an inference CSV: empty labels, its own row order
        csv.writer(f).writerows([["id", "filename", "label"], *[[i, name, ""] for i, name in enumerate(order)]])
    ensemble = ["--run", runs / "a", "--run", runs / "b", "--batch-size", EVAL_BATCH, "--workers", 0]
    evaluate = ["eval", "cls", *ensemble, "--data", runs / "val"]
    predict = ["predict", "cls", *ensemble, "--images", runs / "val"]
    _parallel(
        [*evaluate, "--json", runs / "one.json"],
        ["launch", "--procs", 2, "--", *evaluate, "--json", runs / "two.json"],
        ["eval", "cls", "--run", runs / "b", "--data", runs / "val", "--weights", "ema", "--batch-size", EVAL_BATCH,
         "--workers", 0, "--json", runs / "ema.json"],
        [*predict, "--out", runs / "pred.csv"],
        [*predict, "--csv", runs / "test.csv", "--out", runs / "pred_ids.csv"],
    )
    results = {k: json.loads((runs / f"{k}.json").read_text()) for k in ("one", "two", "ema")}
    return {"names": names, "order": order, **results}


def test_two_processes_give_identical_accuracy_on_37_images(outputs):
    one, two = outputs["one"], outputs["two"]
    assert one["samples"] == two["samples"] == 37
    assert two == one


def test_ensemble_accuracy_is_that_of_the_mean_of_probabilities(runs, outputs):
    one = outputs["one"]
    labels = P1Folder(runs / "val").labels
    pa, pb = _probabilities(runs / "a", runs / "val"), _probabilities(runs / "b", runs / "val")
    assert one["member_acc"] == [_accuracy(pa, labels), _accuracy(pb, labels)]
    assert one["acc"] == _accuracy((pa + pb) / 2, labels)
    per_class = [_accuracy(((pa + pb) / 2)[[i for i, l in enumerate(labels) if l == c]], [c] * labels.count(c))
                 for c in range(3)]
    assert one["per_class_acc"] == pytest.approx(per_class)


def test_ema_weights_are_written_and_evaluated(runs, outputs):
    labels = P1Folder(runs / "val").labels
    expected = _accuracy(_probabilities(runs / "b", runs / "val", "last", ema=True), labels)
    assert outputs["ema"]["acc"] == expected
    missing = CliRunner().invoke(app, ["tsne", "--run", str(runs / "a"), "--data", str(runs / "val"),
                                       "--out", str(runs / "x.png"), "--weights", "ema"])
    assert isinstance(missing.exception, DlcvkitError) and "ema.safetensors" in str(missing.exception)


def test_predict_writes_one_row_per_image_in_the_course_formats(runs, outputs):
    dataset = P1Folder(runs / "val")  # the same files in name order, so the reference probabilities line up
    probs = (_probabilities(runs / "a", runs / "val") + _probabilities(runs / "b", runs / "val")) / 2
    expected = dict(zip(dataset.names, probs.argmax(dim=1).tolist()))
    rows = list(csv.reader(open(runs / "pred.csv")))
    assert rows[0] == ["filename", "label"]
    assert rows[1:] == [[name, str(expected[name])] for name in outputs["names"]]
    rows = list(csv.reader(open(runs / "pred_ids.csv")))
    assert rows[0] == ["id", "filename", "label"]
    assert rows[1:] == [[str(i), name, str(expected[name])] for i, name in enumerate(outputs["order"])]


def test_tsne_of_a_run_with_an_mlp_head(runs):
    out = runs / "tsne.png"
    result = CliRunner().invoke(app, ["tsne", "--run", str(runs / "b"), "--data", str(runs / "val"),
                                      "--out", str(out), "--method", "pca", "--workers", "0"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    with Image.open(out) as image:
        assert image.size[0] > 100 and image.size[1] > 100


def test_predict_cls_writes_the_same_csv_bytes_with_0_1_and_2_decoding_workers(tmp_path, capsys):
    synth_cls(tmp_path / "images", n=7, size=32, classes=3, seed=2)
    run = make_run(tmp_path / "run", classify_recipe("test_resnet", 32, classes=3), ClassifyTask, "fp32", cpu=True)
    digests = set()
    for workers in (0, 1, 2):
        out = tmp_path / f"w{workers}.csv"
        code, _, err = dlcvkit_here(capsys, "predict", "cls", "--run", run, "--images", tmp_path / "images", "--out",
                                    out, "--batch-size", 3, "--workers", workers)
        assert code == 0, err
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    rows = out.read_text().splitlines()
    assert len(digests) == 1 and rows[0] == "filename,label" and len(rows) == 8
