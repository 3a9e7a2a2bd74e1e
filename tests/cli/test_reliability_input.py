"""Bad input through the real CLI (issue 7, items 1-12): exit code 2, one `dlcvkit: error:` line that names the
file or option, no traceback; and what a run already wrote is kept.

The commands run once in one module fixture, in this process (a subprocess would pay ~3 s of imports each) but
for the one that needs its own environment; the tests read their results.
"""

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from accelerate.state import AcceleratorState

from dlcvkit.cli import main
from dlcvkit.config import load_recipe, write_recipe
from dlcvkit.data.images import write_image
from dlcvkit.data.masks import write_mask
from dlcvkit.engine.weights import read_state_dict, save_weights
from dlcvkit.errors import DlcvkitError
from dlcvkit.tasks.classify import ClassifyRecipe, ClassifyTask

CLS = """
task = "classify"
[data]
img_size = 32
batch_size = 4
num_workers = 1
[model]
backbone = "test_resnet"
[train]
epochs = 3
log_every = 1
ckpt_every = 1
"""

SEG = """
task = "segment"
[data]
img_size = 32
batch_size = 2
num_workers = 1
[model]
name = "fcn32s"
backbone = "test_resnet"
fcn_width = 8
[train]
epochs = 1
"""

BROKEN = "1_2.png"  # the training image that gets truncated
RED_AT = (2, 5)  # (row, col) of the first of the red pixels put into a label mask


def _truncate(path):
    path.write_bytes(path.read_bytes()[:100])


def _fake_run(folder, num_classes, weights_classes):
    """A run folder as `load_run` reads it: a classify recipe of `num_classes` and a model.safetensors of a
    `weights_classes` model (no training needed)."""
    recipe = ClassifyRecipe()
    recipe.data.img_size = 32
    recipe.model.backbone, recipe.model.num_classes = "test_resnet", weights_classes
    model = ClassifyTask(recipe).build_model()
    folder.mkdir()
    recipe.model.num_classes = num_classes
    write_recipe(recipe, folder / "recipe.toml")
    save_weights(model.state_dict(), folder / "model.safetensors")


def _commands(root):
    """name -> (dlcvkit arguments, extra environment)."""
    cls = ["classify", "-r", root / "cls.toml"]
    seg = ["segment", "-r", root / "seg.toml"]
    out = root / "out"
    return {
        # 1. a corrupt image in a training folder (read in a DataLoader worker), and skipping it on request
        "corrupt_train": [*cls, "--data", root / "cls_bad", "--out", out / "corrupt"],
        "skip_train": [*cls, "--data", root / "cls_bad", "--out", out / "skip", "--set", "data.skip_bad=true",
                       "--max-steps", 1],
        "skip_eval": ["eval", "cls", "--run", root / "run_ok", "--data", root / "val_bad", "--skip-bad"],
        # 2. a label mask with red pixels
        "red": ["eval", "seg", "--pred", root / "seg", "--labels", root / "seg_red"],
        # 3. image and mask of different sizes; an image without its mask and the reverse
        "seg_size": [*seg, "--data", root / "seg_size", "--out", out / "seg_size"],
        "seg_no_mask": [*seg, "--data", root / "seg_no_mask", "--out", out / "seg_no_mask"],
        "seg_no_image": [*seg, "--data", root / "seg_no_image", "--out", out / "seg_no_image"],
        # 4. an empty folder; a folder of the wrong layout
        "empty": [*cls, "--data", root / "empty", "--out", out / "empty"],
        "layout": [*cls, "--data", root / "seg", "--out", out / "layout", "--set", "data.layout=p1"],
        # 5. CSVs: a missing column, an unknown file, a label outside 0..C-1
        "csv_column": ["eval", "cls", "--run", root / "run_ok", "--data", root / "cls_val", "--csv",
                       root / "no_filename.csv"],
        "csv_file": ["eval", "cls", "--run", root / "run_ok", "--data", root / "cls_val", "--csv",
                     root / "unknown_file.csv"],
        "csv_label": ["eval", "cls", "--run", root / "run_ok", "--data", root / "cls_val", "--csv",
                      root / "label_7.csv"],
        # 6. weights of another class count
        "mismatch": ["eval", "cls", "--run", root / "run_mismatch", "--data", root / "cls_val"],
        # 7. hub weights while offline
        "hub": ([*cls, "--data", root / "cls", "--out", out / "hub", "--set", "model.pretrained=hub"],
                {"HF_HUB_OFFLINE": "1"}),
        # 8. an unknown recipe key (wrong types and ranges: in-process, below)
        "unknown_key": ["classify", "-r", root / "unknown_key.toml", "--data", root / "cls", "--out", out / "key"],
        # 9. an output folder that cannot be created (a file stands where a folder must go; root ignores modes)
        "unwritable": [*cls, "--data", root / "cls", "--out", root / "a_file" / "run"],
        # 10. a diverging run: a non-finite loss, and weights that become inf while the loss is still finite
        "nan_loss": [*cls, "--data", root / "cls", "--out", out / "nan", "--set", "optim.name=sgd",
                     "--set", "optim.lr=1e8"],
        "inf_weights": [*cls, "--data", root / "cls", "--out", out / "inf", "--set", "optim.name=sgd",
                        "--set", "optim.lr=inf"],
        # 11. --resume without a checkpoint; --resume with a recipe that differs in what it computes
        "resume_empty": ["classify", "--resume", root / "run_ok"],
        "resume_changed": ["classify", "--resume", root / "run_ok", "--set", "optim.lr=0.5"],
        # 12. prediction and label masks that do not pair by name
        "unpaired": ["eval", "seg", "--pred", root / "seg_renamed", "--labels", root / "seg"],
    }


def _make_inputs(root, synth_data):
    (root / "cls.toml").write_text(CLS)
    (root / "seg.toml").write_text(SEG)
    (root / "unknown_key.toml").write_text(CLS + "[optim]\nlrr = 0.1\n")
    (root / "a_file").write_text("")
    (root / "empty").mkdir()
    train, val = synth_data("cls", n=16, size=32, classes=3), synth_data("cls", n=6, size=32, classes=3, seed=1)
    shutil.copytree(train, root / "cls")
    shutil.copytree(val, root / "cls_val")
    shutil.copytree(train, root / "cls_bad")
    _truncate(root / "cls_bad" / BROKEN)
    shutil.copytree(val, root / "val_bad")
    _truncate(root / "val_bad" / "2_1.png")
    _fake_run(root / "run_ok", 3, 3)
    _fake_run(root / "run_mismatch", 5, 3)

    names = sorted(os.listdir(root / "cls_val"))
    (root / "no_filename.csv").write_text("id,file,label\n" + "".join(f"{i},{n},0\n" for i, n in enumerate(names)))
    (root / "unknown_file.csv").write_text("id,filename,label\n0,0_0.png,0\n1,nothere.png,1\n")
    (root / "label_7.csv").write_text("id,filename,label\n0,0_0.png,0\n1,1_0.png,7\n")

    for name in ("seg", "seg_red", "seg_size", "seg_no_mask", "seg_no_image", "seg_renamed"):
        shutil.copytree(synth_data("seg", n=4, size=32), root / name)
    rgb = torch.tensor([0, 255, 255], dtype=torch.uint8)[:, None, None].expand(3, 32, 32).clone()  # all Urban
    rgb[:, RED_AT[0], RED_AT[1]: RED_AT[1] + 3] = torch.tensor([255, 0, 0], dtype=torch.uint8)[:, None]
    write_image(root / "seg_red" / "0001_mask.png", rgb)
    write_mask(root / "seg_size" / "0002_mask.png", torch.zeros(16, 16, dtype=torch.uint8))
    (root / "seg_no_mask" / "0001_mask.png").unlink()
    (root / "seg_no_image" / "0003_sat.jpg").unlink()
    (root / "seg_renamed" / "0002_mask.png").rename(root / "seg_renamed" / "0009_mask.png")


def _dlcvkit_here(args) -> subprocess.CompletedProcess:
    """The CLI in this process, its output captured as a subprocess's would be."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code or 0
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)  # the next command builds its own Accelerator
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def _dlcvkit(args, env=None):
    return subprocess.run([sys.executable, "-m", "dlcvkit", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})}, check=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory, synth_data):
    root = tmp_path_factory.mktemp("bad_input")
    _make_inputs(root, synth_data)
    commands = {name: spec if isinstance(spec, tuple) else (spec, None) for name, spec in _commands(root).items()}
    with ThreadPoolExecutor(1) as pool:  # the subprocesses run while this process runs the others
        futures = {name: pool.submit(_dlcvkit, args, env) for name, (args, env) in commands.items() if env}
        results = {name: _dlcvkit_here(args) for name, (args, env) in commands.items() if not env}
        return root, results | {name: future.result() for name, future in futures.items()}


def _error_line(proc) -> str:
    """The one error line of a failed command (after any progress output), checked for the contract."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("dlcvkit: error: "), proc.stderr
    return line


def test_1_corrupt_training_image_is_named(world):
    line = _error_line(world[1]["corrupt_train"])
    assert "cannot decode image" in line and BROKEN in line


def test_1_skip_bad_leaves_out_the_corrupt_image_and_says_so(world):
    root, runs = world
    proc = runs["skip_train"]
    assert proc.returncode == 0, proc.stderr
    assert re.search(rf"data\.train .*skipped 1 of 16 samples.*{re.escape(BROKEN)}", proc.stderr), proc.stderr
    assert (root / "out" / "skip" / "model.safetensors").is_file()
    evaluated = runs["skip_eval"]
    assert evaluated.returncode == 0, evaluated.stderr
    assert "skipped 1 of 6 samples" in evaluated.stderr and "2_1.png" in evaluated.stderr
    assert re.search(r"accuracy: [\d.]+ \(\d+/5\)", evaluated.stdout), evaluated.stdout  # 5 of the 6 images


def test_2_red_mask_pixels_are_counted_and_located(world):
    line = _error_line(world[1]["red"])
    assert "0001_mask.png" in line and "3 red" in line and f"row {RED_AT[0]}, col {RED_AT[1]}" in line
    assert "--red-as" in line


def test_3_image_and_mask_sizes_and_partners(world):
    runs = world[1]
    line = _error_line(runs["seg_size"])
    assert "0002_sat.jpg is 32x32" in line and "0002_mask.png is 16x16" in line
    line = _error_line(runs["seg_no_mask"])
    assert "0001_sat.jpg" in line and "no 0001_mask.png" in line
    line = _error_line(runs["seg_no_image"])
    assert "0003_mask.png" in line and "no 0003_sat.jpg" in line


def test_4_empty_folder_and_wrong_layout(world):
    root, runs = world
    line = _error_line(runs["empty"])
    assert str(root / "empty") in line and "is empty" in line
    line = _error_line(runs["layout"])
    assert str(root / "seg") in line and "{label}_{index}.png" in line
    assert not (root / "out" / "empty" / "recipe.toml").exists()  # a failed start leaves no run behind


def test_5_csv_problems(world):
    runs = world[1]
    line = _error_line(runs["csv_column"])
    assert "no_filename.csv" in line and "'filename'" in line
    line = _error_line(runs["csv_file"])
    assert "unknown_file.csv line 3" in line and "'nothere.png'" in line
    line = _error_line(runs["csv_label"])
    assert "label 7" in line and "0..2" in line and "label_7.csv" in line


def test_6_weights_of_another_class_count_show_the_first_mismatch(world):
    line = _error_line(world[1]["mismatch"])
    assert re.search(r"'head[\w.]*' has shape \(3,[\d, ]*\) in the file and \(5,[\d, ]*\) in the model", line), line


def test_7_offline_hub_says_how_to_pass_a_local_file(world):
    root, runs = world
    line = _error_line(runs["hub"])
    assert "hub" in line and "--set model.pretrained=/path/to/" in line
    assert not (root / "out" / "hub" / "recipe.toml").exists()  # the same --out works once fixed


def test_8_unknown_key_lists_the_valid_ones(world):
    line = _error_line(world[1]["unknown_key"])
    assert "'optim.lrr'" in line and "lr, weight_decay" in line


def test_8_values_of_the_wrong_type_or_out_of_range_are_refused_when_the_recipe_loads(tmp_path):
    (tmp_path / "r.toml").write_text(CLS)
    for override, expected in (("train.epochs=many", "'train.epochs' must be an integer, got 'many'"),
                               ("data.batch_size=0", "'data.batch_size' must be between 1 and 65536, got 0"),
                               ("train.model_ema=1.5", "'train.model_ema' must be between 0 and 1, got 1.5"),
                               ("optim.lr=nan", "'optim.lr' must be at least 0, got nan")):
        with pytest.raises(DlcvkitError, match=re.escape(expected)):
            load_recipe(tmp_path / "r.toml", ClassifyRecipe, [override])
    assert load_recipe(tmp_path / "r.toml", ClassifyRecipe, ["train.model_ema=0.0"]).train.model_ema == 0.0


def test_9_unwritable_output_folder_is_refused_before_training(world):
    root, runs = world
    proc = runs["unwritable"]
    line = _error_line(proc)
    assert str(root / "a_file" / "run") in line and "--out" in line
    assert "steps (" not in proc.stderr  # training never started


def test_10_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint(world):
    root, runs = world
    line = _error_line(runs["nan_loss"])
    failed = int(re.search(r"the training loss became (?:nan|inf) by step (\d+)", line)[1])
    checkpoints = root / "out" / "nan" / "checkpoints"
    kept = (checkpoints / "latest").read_text()
    assert f"checkpoints/{kept}" in line and int(kept.removeprefix("step_")) == failed - 1
    assert (checkpoints / kept / "trainer_state.json").is_file()
    assert not (root / "out" / "nan" / "model.safetensors").exists()


def test_10_weights_that_become_inf_are_never_checkpointed(world):
    root, runs = world
    line = _error_line(runs["inf_weights"])
    assert "weights became inf/nan at step 1" in line and "no checkpoint was written" in line
    assert not (root / "out" / "inf" / "checkpoints" / "latest").exists()


def test_11_resume_needs_a_checkpoint_and_the_same_recipe(world):
    root, runs = world
    line = _error_line(runs["resume_empty"])
    assert "--resume" in line and str(root / "run_ok") in line and "no complete checkpoint" in line
    line = _error_line(runs["resume_changed"])
    assert "optim.lr" in line and "differs" in line
    assert (root / "run_ok" / "model.safetensors").is_file()  # nothing of the run was touched


def test_12_eval_seg_folders_that_do_not_pair_by_name(world):
    line = _error_line(world[1]["unpaired"])
    assert "0009_mask.png" in line and "paired by name" in line


class _Payload:
    """Unpickling this runs `open(path, "w")`: what a malicious .pth could do with any code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_weight_files_never_unpickle_code_or_whole_models(tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"conv.weight": torch.zeros(1), "payload": _Payload(marker)}, tmp_path / "evil.pth")
    with pytest.raises(DlcvkitError, match=r"evil\.pth cannot be loaded safely \(weights_only=True\)"):
        read_state_dict(tmp_path / "evil.pth")
    assert not marker.exists()
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pt")  # a pickled module, not a state_dict
    with pytest.raises(DlcvkitError, match="cannot be loaded safely"):
        read_state_dict(tmp_path / "model.pt")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "state.pt")
    assert set(read_state_dict(tmp_path / "state.pt")) == {"weight", "bias"}
