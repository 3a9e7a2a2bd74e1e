"""Frozen-feature evaluation: kNN by cosine, the linear probe, and `dlcvkit eval probe`."""

import json
import shutil

import numpy as np
import pytest
import timm
import torch

from dlcvkit.engine.weights import save_weights
from dlcvkit.errors import DlcvkitError
from dlcvkit.runs.probe import knn_accuracy, linear_probe_accuracy, open_backbone
from tests.cli_runner import dlcvkit


def test_knn_votes_by_cosine_not_euclidean_distance():
    train_x = np.array([[10.0, 0.0], [0.5, 0.5]])
    train_y = np.array([0, 1])
    # (1, 0.2) is nearer (0.5, 0.5) in euclidean distance but at a smaller angle to (10, 0)
    assert knn_accuracy(train_x, train_y, np.array([[1.0, 0.2]]), np.array([0]), k=1) == 1.0


def test_knn_k20_matches_a_direct_majority_vote():
    rng = np.random.default_rng(0)
    train_x, train_y = rng.normal(size=(200, 8)), rng.integers(0, 4, 200)
    val_x = rng.normal(size=(50, 8)) + 0.5 * np.eye(8)[rng.integers(0, 8, 50)]
    val_y = rng.integers(0, 4, 50)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    nearest = np.argsort(-(unit(val_x) @ unit(train_x).T), axis=1)[:, :20]
    votes = np.array([np.bincount(train_y[row], minlength=4).argmax() for row in nearest])
    assert knn_accuracy(train_x, train_y, val_x, val_y) == pytest.approx(np.mean(votes == val_y))


def test_linear_probe_separates_separable_classes():
    rng = np.random.default_rng(0)
    centres = 6 * np.eye(5)[:3]
    train_y, val_y = rng.integers(0, 3, 90), rng.integers(0, 3, 30)
    train_x = centres[train_y] + rng.normal(size=(90, 5))
    val_x = centres[val_y] + rng.normal(size=(30, 5))
    assert linear_probe_accuracy(train_x, train_y, val_x, val_y) == 1.0
    shuffled = rng.permutation(train_y)  # labels unrelated to the features: near chance
    assert linear_probe_accuracy(train_x, shuffled, val_x, val_y) < 0.7


@pytest.fixture(scope="module")
def office(tmp_path_factory, office_data):
    root = tmp_path_factory.mktemp("probe")
    shutil.copytree(office_data, root / "office")
    return root


def test_eval_probe_reads_the_architecture_from_a_byol_file(office):
    torch.manual_seed(0)
    net = timm.create_model("test_resnet", num_classes=0)
    save_weights(net.state_dict(), office / "backbone.safetensors", {"backbone": "test_resnet", "img_size": "32"})
    proc = dlcvkit("eval", "probe", "--backbone", office / "backbone.safetensors", "--data", office / "office",
                   "--workers", 0, "--json", office / "probe.json")
    result = json.loads((office / "probe.json").read_text())
    assert (result["arch"], result["img_size"], result["k"]) == ("test_resnet", 32, 20)
    assert (result["train"], result["val"]) == (48, 12)
    assert f"linear probe accuracy: {result['linear_probe_acc']:.4f}" in proc.stdout
    assert f"kNN (k=20, cosine) accuracy: {result['knn_acc']:.4f}" in proc.stdout


def test_a_plain_state_dict_needs_the_architecture(tmp_path):
    torch.save(timm.create_model("test_resnet").state_dict(), tmp_path / "plain.pth")
    with pytest.raises(DlcvkitError, match="--model"):
        open_backbone(tmp_path / "plain.pth", None)
    backbone, name = open_backbone(tmp_path / "plain.pth", "test_resnet")  # its 1000-class head is dropped
    assert name == "test_resnet" and not backbone.training
