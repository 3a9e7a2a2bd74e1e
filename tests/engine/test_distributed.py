"""1 process vs 2 (real gloo process groups through `accelerate launch`): the same metrics and the same training;
and the device of the commands that run outside the engine."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed
from safetensors.torch import load_file

from dlcvkit.augment.common import normalize, to_unit
from dlcvkit.cli.launch import _free_port
from dlcvkit.data.labeled import P1Folder
from dlcvkit.engine.distributed import pick_device
from dlcvkit.errors import DlcvkitError
from dlcvkit.models.classifier import build_classifier
from tests.cli_runner import dlcvkit

SCRIPT = Path(__file__).parents[1] / "scripts" / "eval_shards.py"
CPU_2PROC = Path(__file__).parents[2] / "launch" / "cpu_2proc.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    dlcvkit("data", "synth", "cls", "--out", root / "train", "--n", 32, "--size", 32, "--classes", 3)
    # 37 samples: not a multiple of 2 processes x 4 per batch
    dlcvkit("data", "synth", "cls", "--out", root / "val", "--n", 37, "--size", 32, "--classes", 3, "--seed", 1)
    return root


def _confusion(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("CONFUSION "))
    return json.loads(line.removeprefix("CONFUSION "))


def test_two_processes_count_every_sample_once_and_agree_exactly(data):
    args = [str(SCRIPT), str(data / "val"), "3"]
    one = _confusion([sys.executable, *args])
    # through the shipped launch config, as the launch/README shows
    two = _confusion([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC),
                      "--main_process_port", str(_free_port()), *args])
    assert two == one
    assert sum(map(sum, one)) == 37
    # independent reference: the same model applied sample by sample in this process
    set_seed(0)
    model = build_classifier("test_resnet", 3).eval()
    dataset = P1Folder(data / "val", size=32)
    expected = torch.zeros(3, 3, dtype=torch.int64)
    with torch.no_grad():
        for i in range(0, len(dataset), 4):  # same batch composition as the engine's EvalBatches
            batch = [dataset[j] for j in range(i, min(i + 4, len(dataset)))]
            images = torch.stack([b["image"] for b in batch])
            for b, p in zip(batch, model(normalize(to_unit(images))).argmax(1).tolist()):
                expected[b["label"], p] += 1
    assert one == expected.tolist()


def test_two_process_training_equals_one_process_on_the_same_global_batch(data, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'task = "classify"\n[data]\nimg_size = 32\nbatch_size = 8\nnum_workers = 0\n'
        '[model]\nbackbone = "test_resnet"\n[aug]\npreset = "none"\n[train]\nepochs = 1\nlog_every = 1\n'
    )
    common = ["classify", "-r", recipe, "--data", data / "train", "--max-steps", 3]
    dlcvkit(*common, "--out", tmp_path / "one")
    dlcvkit("launch", "--procs", 2, "--", *common, "--out", tmp_path / "two")
    losses = [[r["loss"] for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())]
              for run in ("one", "two")]
    assert len(losses[0]) == 3
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    one, two = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    for key in one:
        if one[key].is_floating_point():
            torch.testing.assert_close(two[key], one[key], rtol=1e-3, atol=1e-4)


def test_pick_device_names_the_option_for_a_bad_or_an_absent_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DlcvkitError, match="--device gpu0: expected auto, cpu, cuda or cuda:N"):
        pick_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(DlcvkitError, match="--device cuda: no GPU is visible; use --device cpu"):
            pick_device("cuda")
