"""Reproducible files (issue 24): the same weights and metadata make the same bytes, whichever process writes them
(safetensors keeps metadata in a Rust HashMap whose order is random per process), so that runs compare by hash."""

import hashlib
import subprocess
import sys

import pytest
from accelerate.state import AcceleratorState
from safetensors import safe_open

from dlcvkit.engine.loop import fit
from dlcvkit.engine.runlog import counted
from tests.engine.test_loop import ScoredLineTask, _task

SAVE = """
import sys, torch
from dlcvkit.engine.weights import save_weights
save_weights({"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(3, dtype=torch.int64)}, sys.argv[1],
             {"step": "3", "miou": "0.5", "zeta": "z", "alpha": "a", "mid": "m"})
"""


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_weights_saved_in_different_processes_have_equal_bytes(tmp_path):
    files = [tmp_path / f"{i}.safetensors" for i in range(3)]
    for file in files:
        subprocess.run([sys.executable, "-c", SAVE, str(file)], check=True)
    assert len({_sha256(f) for f in files}) == 1
    with safe_open(str(files[0]), "pt") as f:  # and it is a valid file with all its metadata
        assert f.metadata() == {"format": "pt", "step": "3", "miou": "0.5", "zeta": "z", "alpha": "a", "mid": "m"}
        assert f.get_tensor("b").tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_two_identical_runs_write_weight_files_with_equal_hashes(tmp_path, capsys):
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        AcceleratorState._reset_state(reset_partial_state=True)
        task = _task(cls=ScoredLineTask)
        task.recipe.train.model_ema = 0.5
        fit(task, run)
    AcceleratorState._reset_state(reset_partial_state=True)
    names = sorted(p.relative_to(runs[0]) for p in runs[0].rglob("*.safetensors"))
    assert {"model.safetensors", "best.safetensors", "ema.safetensors"} <= {str(n) for n in names}
    assert any(n.parts[0] == "checkpoints" for n in names)
    assert [_sha256(runs[0] / n) for n in names] == [_sha256(runs[1] / n) for n in names]
    assert "ScoredLineTask: 8 steps (4/epoch), 1 process on cpu, from step 0 to 8" in capsys.readouterr().err


@pytest.mark.parametrize("n, noun, plural, text", [
    (1, "process", "processes", "1 process"), (2, "process", "processes", "2 processes"),
    (0, "part", None, "0 parts"), (1, "part", None, "1 part"),
])
def test_a_count_says_its_noun_in_the_right_number(n, noun, plural, text):
    assert counted(n, noun, plural) == text
