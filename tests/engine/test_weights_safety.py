"""No weights file with inf/nan is written or used, no checkpoint is resumed inexactly, misspelt names get the
closest ones (issue 12, items 4, 5 and 8). Through the real CLI, in this process where it can be."""

import hashlib
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dlcvkit.cli import main
from dlcvkit.config import load_recipe, write_recipe
from dlcvkit.data.synth import synth_cls
from dlcvkit.engine.weights import non_finite_key, read_state_dict, save_weights
from dlcvkit.errors import DlcvkitError
from dlcvkit.models.backbones import create_backbone
from dlcvkit.models.segmenters import build_segmenter
from dlcvkit.tasks.classify import ClassifyRecipe, ClassifyTask
from dlcvkit.tasks.registry import task_classes
from dlcvkit.tasks.segment import SegmentRecipe, SegmentTask
from tests.cli_runner import dlcvkit_here

# 16 images / batch 4 = 4 steps per epoch, 8 in all; a checkpoint after every step; augmentation and a model
# EMA, so that a resume is exact only if the RNG states, the optimizer and the EMA are all restored.
RESUME = """
task = "classify"
[data]
img_size = 32
batch_size = 4
num_workers = 0
[model]
backbone = "test_resnet"
[train]
epochs = 2
ckpt_every = 1
keep_checkpoints = 3
model_ema = 0.9
"""
# 12 images / batch 4 = 3 steps per epoch: the first evaluation (and best.safetensors) comes at step 3, before
# the first checkpoint and the first loss read-back (train.log_every = 10); optim.lr=1e8 diverges by then.
DIVERGE = """
task = "classify"
[data]
img_size = 32
batch_size = 4
num_workers = 0
[model]
backbone = "test_resnet"
[train]
epochs = 2
"""
LAST_GOOD = "step_00000003"  # the run `split` stops at step 4; its step_4 checkpoint gets damaged


def _train(*args) -> None:
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    assert done.value.code in (0, None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synth_data):
    """An uninterrupted run (`whole`) and one stopped at step 4 (`split`), of the same recipe."""
    root = tmp_path_factory.mktemp("weights_safety")
    (root / "resume.toml").write_text(RESUME)
    common = ["classify", "-r", root / "resume.toml", "--data", synth_data("cls", n=16, size=32, classes=3)]
    _train(*common, "--out", root / "whole")
    _train(*common, "--out", root / "split", "--max-steps", 4)
    return root


def _error_line(code: int, err: str) -> str:
    """The one error line a refused command prints (exit code 2, no traceback; training's progress before it)."""
    assert code == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err
    assert errors[0].startswith("dlcvkit: error: "), err
    return errors[0]


def _non_finite(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file with one weight made nan, written around save_weights (which refuses)."""
    state = load_file(path)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key][(0,) * state[key].dim()] = float("nan")
    return state


def _all_finite(folder: Path) -> bool:
    files = list(folder.rglob("*.safetensors"))
    return all(v.isfinite().all() for f in files for v in load_file(f).values() if v.is_floating_point())


# --- 4. non-finite weights ------------------------------------------------------------------------------------


def test_a_diverging_run_stops_before_evaluating_and_writes_no_non_finite_file(tmp_path, capsys, synth_data):
    (tmp_path / "r.toml").write_text(DIVERGE)
    synth_cls(tmp_path / "train", n=12, size=32, classes=3)
    val = synth_data("cls", n=6, size=32, classes=3, seed=1)
    run = tmp_path / "run"
    line = _error_line(*dlcvkit_here(capsys, "classify", "-r", tmp_path / "r.toml", "--data", tmp_path / "train",
                                     "--val", val, "--out", run, "--set", "optim.lr=1e8")[::2])
    assert "weights became inf/nan at step 3" in line and "no checkpoint was written" in line
    assert not (run / "best.safetensors").exists() and not (run / "checkpoints").exists()
    assert _all_finite(run)


@pytest.fixture()
def diverged_runs(tmp_path, synth_data):
    """A classification and a segmentation run folder whose best.safetensors holds a nan (model.safetensors
    is fine), and data to run them on; no training needed."""
    cls, seg = ClassifyRecipe(), SegmentRecipe()
    cls.data.img_size, cls.model.backbone, cls.model.num_classes = 32, "test_resnet", 3
    seg.data.img_size, seg.model.name, seg.model.backbone, seg.model.fcn_width = 32, "fcn32s", "test_resnet", 8
    for name, recipe, task in (("cls_run", cls, ClassifyTask), ("seg_run", seg, SegmentTask)):
        run = tmp_path / name
        run.mkdir()
        write_recipe(recipe, run / "recipe.toml")
        save_weights(task(recipe).build_model().state_dict(), run / "model.safetensors")
        save_file(_non_finite(run / "model.safetensors"), run / "best.safetensors")
    synth_cls(tmp_path / "cls", n=4, size=32, classes=3)
    shutil.copytree(synth_data("seg", n=2, size=32), tmp_path / "seg")
    return tmp_path


@pytest.mark.parametrize("command", ["predict cls", "eval cls", "eval seg"])
def test_commands_refuse_a_run_whose_best_weights_are_not_finite(diverged_runs, capsys, command):
    root = diverged_runs
    args = {
        "predict cls": ["predict", "cls", "--run", root / "cls_run", "--images", root / "cls", "--out", root / "p.csv"],
        "eval cls": ["eval", "cls", "--run", root / "cls_run", "--data", root / "cls"],
        "eval seg": ["eval", "seg", "--run", root / "seg_run", "--data", root / "seg"],
    }[command]
    run = root / ("seg_run" if command == "eval seg" else "cls_run")
    line = _error_line(*dlcvkit_here(capsys, *args, "--workers", 0)[::2])
    assert f"weights file {run / 'best.safetensors'} holds inf/nan values" in line
    assert not (root / "p.csv").exists()


def test_pretrained_file_with_nan_is_refused_naming_it(tmp_path):
    """model.pretrained: a file that fits the backbone, but holds a nan."""
    nan_file = tmp_path / "nan_backbone.safetensors"
    save_weights(create_backbone("test_resnet").state_dict(), nan_file)
    save_file(_non_finite(nan_file), nan_file)
    with pytest.raises(DlcvkitError, match=re.escape(f"weights file {nan_file} holds inf/nan values")):
        create_backbone("test_resnet", pretrained=str(nan_file))


def test_read_and_save_refuse_non_finite_floats_but_not_integer_buffers(tmp_path):
    good = {"w": torch.ones(3), "num_batches_tracked": torch.tensor(7)}
    save_weights(good, tmp_path / "good.safetensors")
    assert read_state_dict(tmp_path / "good.safetensors")["num_batches_tracked"].item() == 7
    bad = {"w": torch.tensor([1.0, float("inf")]), "b": torch.zeros(2)}
    with pytest.raises(DlcvkitError, match=re.escape(f"refusing to write {tmp_path / 'bad.safetensors'}") + ".*'w'"):
        save_weights(bad, tmp_path / "bad.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.safetensors"]  # nothing half-written
    torch.save({"state_dict": {"b": torch.zeros(2), "w": torch.tensor([float("nan")])}}, tmp_path / "bad.pth")
    with pytest.raises(DlcvkitError, match=re.escape(f"weights file {tmp_path / 'bad.pth'}") + r".* \(first in 'w'\)"):
        read_state_dict(tmp_path / "bad.pth")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_the_finite_check_is_exact_where_a_sum_overflows_or_cancels(dtype):
    big = torch.finfo(dtype).max
    # the float32 sum is inf (for float16 it stays finite: the plain path)
    overflowing = {"a": torch.zeros(2, dtype=dtype), "huge": torch.full((4,), big, dtype=dtype)}
    assert non_finite_key(overflowing) is None  # finite values whose sum overflows pass
    cancelling = {"ok": torch.full((4,), big, dtype=dtype),
                  "w": torch.tensor([float("inf"), -float("inf"), 1.0], dtype=dtype)}  # sum: nan
    assert non_finite_key(cancelling) == "w"
    assert non_finite_key({"i": torch.arange(3), "n": torch.tensor([0.0, float("nan")], dtype=dtype)}) == "n"
    assert non_finite_key({"i": torch.arange(3)}) is None


# --- 5. damaged checkpoints -----------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _from_older(path: Path) -> None:
    """Replace a file by the same file of the previous checkpoint: valid, loads without an error, wrong."""
    shutil.copyfile(path.parent.parent / LAST_GOOD / path.name, path)


DAMAGES = {
    "truncated random_states_0.pkl": ("random_states_0.pkl", _truncate),
    "substituted random_states_0.pkl": ("random_states_0.pkl", _from_older),
    "truncated model.safetensors": ("model.safetensors", _truncate),
    "substituted optimizer.bin": ("optimizer.bin", _from_older),
}


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _same_weights(a: Path, b: Path) -> bool:
    for name in ("model.safetensors", "ema.safetensors"):
        x, y = load_file(a / name), load_file(b / name)
        if x.keys() != y.keys() or not all(torch.equal(x[k], y[k]) for k in x):
            return False
    return True


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_checkpoint_stops_resume_and_the_older_one_resumes_exactly(runs, tmp_path, capsys, damage):
    run = tmp_path / "run"
    shutil.copytree(runs / "split", run)
    name, spoil = DAMAGES[damage]
    file = run / "checkpoints" / "step_00000004" / name
    spoil(file)
    before = _hashes(run)
    line = _error_line(*dlcvkit_here(capsys, "classify", "--resume", run)[::2])
    assert str(file) in line
    assert _hashes(run) == before  # nothing trained, nothing written
    pointer = run / "checkpoints" / "latest"
    told = re.search(r"write its name, (step_\d+), into (\S+)$", line)
    assert told and told[1] == LAST_GOOD and told[2] == str(pointer), line
    pointer.write_text(told[1])  # as the message says
    code, _, err = dlcvkit_here(capsys, "classify", "--resume", run)
    assert code in (0, None) and "from step 3 to 8" in err, err
    assert _same_weights(run, runs / "whole")


def test_a_missing_checkpoint_file_is_named(runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs / "split", run)
    file = run / "checkpoints" / "step_00000004" / "optimizer.bin"
    file.unlink()
    line = _error_line(*dlcvkit_here(capsys, "classify", "--resume", run)[::2])
    assert f"checkpoint file {file} is missing" in line and LAST_GOOD in line


@pytest.mark.parametrize("content", ["truncated", "another pickle"])
def test_checkpoints_without_a_manifest_still_check_their_rng_states(runs, tmp_path, capsys, content):
    """Checkpoints of versions that wrote no manifest: the RNG file, which accelerate skips silently when it
    cannot restore it, is read and checked here."""
    run = tmp_path / "run"
    shutil.copytree(runs / "split", run)
    step = run / "checkpoints" / "step_00000004"
    (step / "manifest.json").unlink(missing_ok=True)
    file = step / "random_states_0.pkl"
    if content == "truncated":
        _truncate(file)
    else:
        torch.save({"step": 4, "note": "not RNG states"}, file)
    line = _error_line(*dlcvkit_here(capsys, "classify", "--resume", run)[::2])
    assert str(file) in line and LAST_GOOD in line


def test_a_checkpoint_with_non_finite_weights_is_refused(runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs / "split", run)
    step = run / "checkpoints" / "step_00000004"
    (step / "manifest.json").unlink(missing_ok=True)  # so that the finiteness check, not the manifest, has to find it
    save_file(_non_finite(step / "ema.safetensors"), step / "ema.safetensors")
    line = _error_line(*dlcvkit_here(capsys, "classify", "--resume", run)[::2])
    assert f"weights file {step / 'ema.safetensors'} holds inf/nan values" in line and LAST_GOOD in line


# --- 8. suggestions -------------------------------------------------------------------------------------------


def test_a_misspelt_timm_model_gets_the_closest_names_first():
    with pytest.raises(DlcvkitError) as error:
        create_backbone("resnt18")
    assert re.search(r"similar: resnet18, ", str(error.value))
    with pytest.raises(DlcvkitError) as error:
        create_backbone("resnet_typo")
    similar = str(error.value).split("similar: ")[1].split(", ")
    assert similar and all("resnet" in name for name in similar), similar


def test_misspelt_segmenter_task_and_recipe_key_get_the_closest_name(tmp_path):
    with pytest.raises(DlcvkitError, match=re.escape("unknown segmenter 'fcn8' (did you mean 'fcn8s'?)")):
        build_segmenter("fcn8", "test_resnet")
    with pytest.raises(DlcvkitError, match=re.escape("unknown task 'clasify' (did you mean 'classify'?)")):
        task_classes("clasify")
    (tmp_path / "r.toml").write_text('task = "classify"\n[optim]\nlrr = 0.1\n')
    with pytest.raises(DlcvkitError, match=re.escape("unknown recipe key 'optim.lrr' (did you mean 'optim.lr'?)")):
        load_recipe(tmp_path / "r.toml", ClassifyRecipe)
    (tmp_path / "ok.toml").write_text('task = "classify"\n')
    with pytest.raises(DlcvkitError, match=re.escape("--set train.epoch: unknown recipe key 'train.epoch' (did you "
                                                     "mean 'train.epochs'?)")):
        load_recipe(tmp_path / "ok.toml", ClassifyRecipe, ["train.epoch=3"])
