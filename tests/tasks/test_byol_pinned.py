"""BYOL unchanged by the method contract (issue 27): the losses of a 3-step run with the paper's random views, and
the weights it writes, pinned to the values this exact run gave before BYOL moved onto the contract."""

import hashlib
import json

from safetensors.torch import load_file

from tests.cli_runner import dlcvkit_here

RECIPE = """task = "byol"
[data]
img_size = 32
batch_size = 8
num_workers = 0
[model]
backbone = "test_resnet"
projection_hidden = 64
projection_dim = 32
prediction_hidden = 64
tau_base = 0.99
[aug]
preset = "paper"
[optim]
name = "adam"
lr = 1e-3
weight_decay = 0.0
[train]
epochs = 1
log_every = 1
"""

# recorded at 3dc3ddd with one torch thread (tests/conftest.py) (BYOL in tasks/byol.py, models/byol.py, augment/byol.py), before the contract
LOSSES = [3.9325737953186035, 3.7771379947662354, 3.760645866394043]
BACKBONE_SHA256 = "4986f5450b4466a59e0230b3ab88dcf8e79e9df3e6af93426a86ee0048da55ed"
MODEL_SHA256 = "dd71cd466cf082ae04828c76f8bdc99a10b5d0071b052c1d9e486c667ed8e0e7"


def _digest(path) -> str:
    """sha256 over the tensors' names and bytes in name order (independent of the file's header layout)."""
    weights, digest = load_file(path), hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode() + weights[name].contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_byol_losses_and_weights_are_those_recorded_before_the_contract(synth_data, tmp_path, capsys):
    recipe = tmp_path / "byol.toml"
    recipe.write_text(RECIPE)
    code, _, err = dlcvkit_here(capsys, "byol", "-r", recipe, "--data", synth_data("ssl", n=24, size=32),
                                "--out", tmp_path / "run")
    assert code == 0, err
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["loss"] for row in rows if "loss" in row] == LOSSES
    assert _digest(tmp_path / "run" / "backbone.safetensors") == BACKBONE_SHA256
    assert _digest(tmp_path / "run" / "model.safetensors") == MODEL_SHA256
