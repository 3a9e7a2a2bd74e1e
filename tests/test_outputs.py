"""Outputs, through the real CLI: a command never writes into a folder or over a file it did not create (unless
--overwrite asks, and never over an input), and a run folder whose run never reached a checkpoint starts again.

Every refusal is exit code 2 with one stderr line naming the path and the option, no traceback, and every user
file byte-identical before and after (sha256 of every file of the folder)."""

import hashlib
import json
import shutil

import pytest

from dlcvkit.config import write_recipe
from dlcvkit.engine.rundir import RUN_FILES, RUN_MARKER
from dlcvkit.engine.runlog import read_metrics
from dlcvkit.engine.weights import save_weights
from dlcvkit.tasks.segment import SegmentRecipe, SegmentTask
from tests.cli_runner import dlcvkit, dlcvkit_here

RECIPE = """task = "classify"
[data]
img_size = 32
batch_size = 4
num_workers = 0
[model]
backbone = "test_resnet"
[train]
epochs = 1
"""
USER_FILES = {"report.md": "# my report\n", "report.html": "<p>mine</p>\n", "curves.png": "not a png, mine\n",
              "model.safetensors": "my weights\n", "notes.txt": "my notes\n"}


def _hashes(folder):
    """sha256 of every file under `folder`, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(result, *named):
    """Exit code 2, exactly one `dlcvkit: error:` line on stderr naming every `named`, no traceback."""
    code, _, err = result
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("dlcvkit: error: "), err
    assert "Traceback" not in err
    for name in named:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def _user_folder(path, files=USER_FILES):
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory, cls_data, synth_data):
    """Tiny P1 and P2 data, a finished classification run (trained by the CLI) and a segmentation run folder
    (random weights: predictions only need to be written, not to be good)."""
    root = tmp_path_factory.mktemp("outputs")
    shutil.copytree(cls_data, root / "cls")
    shutil.copytree(synth_data("seg", n=2, size=32), root / "seg")
    (root / "cls.toml").write_text(RECIPE)
    dlcvkit("classify", "-r", root / "cls.toml", "--data", root / "cls", "--val", root / "cls", "--out", root / "run")
    recipe = SegmentRecipe()
    recipe.model.name, recipe.model.backbone, recipe.model.fcn_width, recipe.data.img_size = "fcn8s", "test_resnet", 8, 32
    recipe.data.batch_size, recipe.data.num_workers = 2, 0  # the data are checked before the run folder
    (root / "seg_run").mkdir()
    write_recipe(recipe, root / "seg_run" / "recipe.toml")
    save_weights(SegmentTask(recipe).build_model().state_dict(), root / "seg_run" / "model.safetensors")
    return root


def _classify(capsys, root, out, *extra):
    return dlcvkit_here(capsys, "classify", "-r", root / "cls.toml", "--data", root / "cls", "--out", out, *extra)


# ------------------------------------------------------------------------------------------ training runs


def test_a_run_writes_only_names_of_its_own_list(world):
    assert {p.name for p in (world / "run").iterdir()} <= {RUN_MARKER, *RUN_FILES}
    assert (world / "run" / RUN_MARKER).is_file() and (world / "run" / "model.safetensors").is_file()


@pytest.mark.parametrize("extra", [(), ("--overwrite",)])
def test_a_foreign_folder_is_never_a_run_folder(world, tmp_path, capsys, extra):
    """Issue 12.1: `segment --out` on a user's folder of report/curves/weights replaced them and exited 0."""
    out = _user_folder(tmp_path / "mine")
    before = _hashes(out)
    line = _refused(dlcvkit_here(capsys, "segment", "-r", world / "seg_run" / "recipe.toml", "--data", world / "seg",
                                 "--out", out, *extra), out, "--out")
    assert "not a dlcvkit folder" in line
    assert _hashes(out) == before


def test_a_foreign_metrics_log_is_not_appended_to(world, tmp_path, capsys):
    """Issue 12.1: a run appended to a foreign metrics.jsonl, then crashed in the report with a KeyError."""
    out = _user_folder(tmp_path / "mine", {"metrics.jsonl": '{"epoch": 1, "acc": 0.5}\n'})
    before = _hashes(out)
    _refused(_classify(capsys, world, out), out, "--out")
    _refused(_classify(capsys, world, out, "--overwrite"), out, "--overwrite")
    assert _hashes(out) == before


def test_overwrite_replaces_a_run_of_ours_and_keeps_other_files(world, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(world / "run", out)
    (out / "notes.txt").write_text("my notes\n")
    (out / "ema.safetensors").write_text("stands for a file of the earlier run that this one does not write\n")
    before = _hashes(out)
    line = _refused(_classify(capsys, world, out), out, "--out", "--resume", "--overwrite")
    assert "already holds a run" in line and _hashes(out) == before

    code, _, err = _classify(capsys, world, out, "--overwrite")
    assert code == 0, err
    after = _hashes(out)
    assert after["notes.txt"] == before["notes.txt"]
    assert not (out / "ema.safetensors").exists()  # ours, of the earlier run: removed
    assert not (out / "best.safetensors").exists()  # the earlier run had --val, this one has not
    assert len(read_metrics(world / "run")) == 2 and read_metrics(out) == read_metrics(out)[:1]  # one new record
    assert "split" not in read_metrics(out)[0]  # not the earlier run's val record


def test_a_failed_start_can_be_started_again(world, tmp_path, capsys):
    """Issue 12.7: a run that stopped before its first checkpoint left a folder that both a new run
    ("already holds a run") and --resume ("no complete checkpoint") refused."""
    out = tmp_path / "run"
    code, _, err = _classify(capsys, world, out, "--set", "optim.name=sgd", "--set", "optim.lr=inf")
    assert code == 2 and "no checkpoint was written" in err
    assert (out / RUN_MARKER).is_file() and (out / "recipe.toml").is_file() and not (out / "checkpoints").exists()
    (out / "notes.txt").write_text("my notes\n")
    notes = _hashes(out)["notes.txt"]
    line = _refused(dlcvkit_here(capsys, "classify", "--resume", out), out, "--resume")
    assert f"start it again with --out {out}" in line

    code, _, err = _classify(capsys, world, out)
    assert code == 0, err
    notes_lines = [line for line in err.splitlines() if line.startswith("dlcvkit: note:")]
    assert len(notes_lines) == 1 and str(out) in notes_lines[0] and "starting it again" in notes_lines[0]
    assert _hashes(out)["notes.txt"] == notes
    assert "lr = inf" not in (out / "recipe.toml").read_text()  # the new run's recipe, not the failed one's
    assert (out / "checkpoints" / "latest").is_file()


def test_resume_and_overwrite_exclude_each_other(world, capsys):
    before = _hashes(world / "run")
    _refused(dlcvkit_here(capsys, "classify", "--resume", world / "run", "--overwrite"), world / "run", "--resume",
             "--overwrite")
    assert _hashes(world / "run") == before


def test_all_settings_checks_every_folder_before_training(world, tmp_path, capsys):
    """A foreign folder is refused before setting A trains, not after hours of A-D."""
    out = _user_folder(tmp_path / "ft")
    before = _hashes(out)
    args = ["finetune", "-r", world / "cls.toml", "--all-settings", "--data", world / "cls", "--val", world / "cls",
            "--supervised", world / "run" / "model.safetensors", "--byol", world / "run" / "model.safetensors"]
    _refused(dlcvkit_here(capsys, *args, "--out", out), out, "--out")
    assert _hashes(out) == before

    ours = tmp_path / "ours"
    (ours / "C").mkdir(parents=True)
    (ours / RUN_MARKER).write_text("")
    (ours / "C" / "notes.txt").write_text("a user's folder where setting C goes\n")
    _refused(dlcvkit_here(capsys, *args, "--out", ours), ours / "C", "--out")
    assert sorted(p.name for p in ours.iterdir()) == [RUN_MARKER, "C"]  # nothing trained, nothing made


# ------------------------------------------------------------------------------------------ other commands


@pytest.mark.parametrize("extra", [(), ("--overwrite",)])
@pytest.mark.parametrize("alias", ["same", "dotdot", "symlink"])
def test_predict_seg_never_writes_into_its_images_folder(world, tmp_path, capsys, extra, alias):
    """Issue 12.2: `predict seg --out` = `--images` overwrote the ground-truth masks and said "wrote 4 masks"."""
    images = tmp_path / "val"
    shutil.copytree(world / "seg", images)
    out = {"same": images, "dotdot": images / ".." / "val", "symlink": tmp_path / "link"}[alias]
    if alias == "symlink":
        out.symlink_to(images, target_is_directory=True)
    before = _hashes(images)
    _refused(dlcvkit_here(capsys, "predict", "seg", "--run", world / "seg_run", "--images", images, "--out", out,
                          *extra), out, "--out", "--data")
    assert _hashes(images) == before


def test_predict_seg_into_a_non_empty_folder_needs_overwrite(world, tmp_path, capsys):
    out = _user_folder(tmp_path / "pred", {"notes.txt": "mine\n", "0000_mask.png": "an earlier prediction\n"})
    before = _hashes(out)
    args = ["predict", "seg", "--run", world / "seg_run", "--images", world / "seg", "--out", out]
    line = _refused(dlcvkit_here(capsys, *args), out, "--out", "--overwrite")
    assert "not empty" in line and _hashes(out) == before
    code, _, err = dlcvkit_here(capsys, *args, "--overwrite")
    assert code == 0, err
    after = _hashes(out)
    assert after["notes.txt"] == before["notes.txt"] and after["0000_mask.png"] != before["0000_mask.png"]
    assert sorted(after) == ["0000_mask.png", "0001_mask.png", "notes.txt"]


def test_predict_seg_on_two_processes_refuses_its_images_folder(world, tmp_path):
    """Under `dlcvkit launch` the processes write their own shares of the masks: each checks --out first.
    (A new folder on two processes is written by `dlcvkit demo` in tests/test_demo_report.py.)"""
    images = tmp_path / "val"
    shutil.copytree(world / "seg", images)
    before = _hashes(images)
    proc = dlcvkit("launch", "--procs", 2, "--", "predict", "seg", "--run", world / "seg_run", "--images", images,
                   "--out", images, "--batch-size", 1, check=False)
    assert proc.returncode != 0
    assert f"dlcvkit: [process 0 of 2] error: --out {images} is also the input --data" in proc.stderr
    assert _hashes(images) == before


@pytest.mark.parametrize("extra", [(), ("--overwrite",)])
def test_predict_cls_never_writes_over_its_csv(world, tmp_path, capsys, extra):
    images = world / "cls"
    table = tmp_path / "test.csv"
    (tmp_path / "sub").mkdir()
    table.write_text("id,filename,label\n" + "".join(f"{i},{p.name},\n" for i, p in
                                                    enumerate(sorted(images.glob("*.png")))))
    before = _hashes(tmp_path)
    _refused(dlcvkit_here(capsys, "predict", "cls", "--run", world / "run", "--images", images, "--csv", table,
                          "--out", tmp_path / "sub" / ".." / "test.csv", *extra), "--out", "--csv", table)
    assert _hashes(tmp_path) == before


def test_predict_cls_over_an_existing_file_needs_overwrite(world, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    out.write_text("my earlier predictions\n")
    before = _hashes(tmp_path)
    args = ["predict", "cls", "--run", world / "run", "--images", world / "cls", "--out", out]
    _refused(dlcvkit_here(capsys, *args), out, "--out", "--overwrite")
    assert _hashes(tmp_path) == before
    code, _, err = dlcvkit_here(capsys, *args, "--overwrite")
    assert code == 0, err
    assert out.read_text().splitlines()[0] == "filename,label" and len(out.read_text().splitlines()) == 9


def test_eval_json_over_an_existing_file_needs_overwrite(world, tmp_path, capsys):
    target = tmp_path / "miou.json"
    target.write_text("my numbers\n")
    before = _hashes(tmp_path)
    args = ["eval", "seg", "--pred", world / "seg", "--labels", world / "seg", "--json", target]
    _refused(dlcvkit_here(capsys, *args), target, "--json", "--overwrite")
    assert _hashes(tmp_path) == before
    code, _, err = dlcvkit_here(capsys, *args, "--overwrite")
    assert code == 0, err
    assert json.loads(target.read_text())["mean_iou"] == 1.0  # the labels scored against themselves


@pytest.mark.parametrize("option", ["--json", "--confusion"])
def test_eval_cls_outputs_over_existing_files_are_refused(world, tmp_path, capsys, option):
    target = tmp_path / "existing"
    target.write_text("mine\n")
    before = _hashes(tmp_path)
    _refused(dlcvkit_here(capsys, "eval", "cls", "--run", world / "run", "--data", world / "cls", option, target),
             target, option)
    assert _hashes(tmp_path) == before


def test_pictures_are_never_written_over_inputs_or_existing_files(world, tmp_path, capsys):
    images = tmp_path / "seg"
    shutil.copytree(world / "seg", images)
    (tmp_path / "tsne.png").write_text("my picture\n")
    before = _hashes(tmp_path)
    mask = images / "0000_mask.png"
    viz = ["viz", "mask", "--image", images / "0000_sat.jpg", "--mask", mask, "--out", mask]
    _refused(dlcvkit_here(capsys, *viz), mask, "--out", "--mask")
    _refused(dlcvkit_here(capsys, *viz, "--overwrite"), mask, "--out", "--mask")
    _refused(dlcvkit_here(capsys, "sam", "--checkpoint", tmp_path / "sam.pth", "--images", images, "--out", images,
                          "--overwrite"), images, "--out", "--data")
    _refused(dlcvkit_here(capsys, "tsne", "--run", world / "run", "--data", world / "cls", "--out",
                          tmp_path / "tsne.png"), tmp_path / "tsne.png", "--out")
    assert _hashes(tmp_path) == before


def test_data_writers_need_overwrite_and_keep_other_files(tmp_path, capsys):
    out = _user_folder(tmp_path / "data", {"notes.txt": "mine\n"})
    args = ["data", "synth", "seg", "--out", out, "--n", 1, "--size", 32]
    _refused(dlcvkit_here(capsys, *args), out, "--out", "--overwrite")
    _refused(dlcvkit_here(capsys, "data", "export-digits", "--out", out), out, "--out", "--overwrite")
    assert sorted(_hashes(out)) == ["notes.txt"]
    code, _, err = dlcvkit_here(capsys, *args, "--overwrite")
    assert code == 0, err
    assert sorted(_hashes(out)) == ["0000_mask.png", "0000_sat.jpg", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine\n"


def test_report_replaces_only_reports_of_its_own_runs(world, tmp_path, capsys):
    code, _, err = dlcvkit_here(capsys, "report", world / "run")  # a run of ours: its report is ours to rewrite
    assert code == 0, err
    foreign = tmp_path / "old_run"  # e.g. a copy without the marker, whose report.md the user edited
    shutil.copytree(world / "run", foreign)
    (foreign / RUN_MARKER).unlink()
    (foreign / "report.md").write_text("my edited report\n")
    before = _hashes(foreign)
    _refused(dlcvkit_here(capsys, "report", foreign), foreign / "report.md", "--overwrite")
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "compare.md").write_text("mine\n")
    _refused(dlcvkit_here(capsys, "report", world / "run", foreign, "--out", tmp_path / "cmp"),
             tmp_path / "cmp" / "compare.md", "--out")
    assert _hashes(foreign) == before and (tmp_path / "cmp" / "compare.md").read_text() == "mine\n"


def test_bench_refuses_its_outputs_before_timing_anything(tmp_path, capsys):
    (tmp_path / "results.json").write_text("my results\n")
    _user_folder(tmp_path / "cache", {"notes.txt": "mine\n"})
    before = _hashes(tmp_path)
    _refused(dlcvkit_here(capsys, "bench", "ema", "--json", tmp_path / "results.json"), tmp_path / "results.json",
             "--json")
    _refused(dlcvkit_here(capsys, "bench", "miou", "--cache", tmp_path / "cache"), tmp_path / "cache", "--cache")
    assert _hashes(tmp_path) == before


@pytest.mark.parametrize("command", ["eval seg", "predict cls"])
def test_a_file_inside_an_input_folder_is_never_replaced(world, tmp_path, capsys, command):
    """An output naming a file that already lies in an input folder (a ground-truth mask, an image) is refused
    even with --overwrite: it is one of the inputs."""
    data = tmp_path / "data"
    shutil.copytree(world / ("seg" if command == "eval seg" else "cls"), data)
    target = sorted(data.glob("*.png"))[0]
    before = _hashes(data)
    if command == "eval seg":
        args = ["eval", "seg", "--pred", data, "--labels", data, "--json", target, "--overwrite"]
    else:
        args = ["predict", "cls", "--run", world / "run", "--images", data, "--out", target, "--overwrite"]
    line = _refused(dlcvkit_here(capsys, *args), target, "a file of the input folder")
    assert "never overwritten" in line
    assert _hashes(data) == before


# ------------------------------------------------------------------------------------------ odd output paths

# every kind of output option: (option, the command with OUT where the path goes)
OUTPUT_OPTIONS = {
    "classify --out": ("--out", ["classify", "-r", "{root}/cls.toml", "--data", "{root}/cls", "--out", "OUT"]),
    "predict seg --out": ("--out", ["predict", "seg", "--run", "{root}/seg_run", "--images", "{root}/seg", "--out",
                                    "OUT"]),
    "predict cls --out": ("--out", ["predict", "cls", "--run", "{root}/run", "--images", "{root}/cls", "--out", "OUT"]),
    "eval seg --json": ("--json", ["eval", "seg", "--pred", "{root}/seg", "--labels", "{root}/seg", "--json", "OUT"]),
    "eval cls --confusion": ("--confusion", ["eval", "cls", "--run", "{root}/run", "--data", "{root}/cls",
                                             "--confusion", "OUT"]),
    "export --out": ("--out", ["export", "--run", "{root}/run", "--out", "OUT"]),
    "tsne --out": ("--out", ["tsne", "--run", "{root}/run", "--data", "{root}/cls", "--out", "OUT"]),
    "data synth --out": ("--out", ["data", "synth", "seg", "--out", "OUT", "--n", "1", "--size", "32"]),
    "bench ema --json": ("--json", ["bench", "ema", "--json", "OUT"]),
}


def _odd_path(tmp_path, kind):
    """(the path given, the expected end of the error line) for a symbolic link loop, a symbolic link to nothing,
    and a path through a file."""
    if kind == "loop":
        (tmp_path / "a").symlink_to(tmp_path / "b")
        (tmp_path / "b").symlink_to(tmp_path / "a")
        return tmp_path / "a", f"{tmp_path / 'a'} is a symbolic link loop; give a real path"
    if kind == "dangling":
        (tmp_path / "link").symlink_to(tmp_path / "gone" / "x")
        return tmp_path / "link", (f"{tmp_path / 'link'}: {tmp_path / 'link'} is a symbolic link to "
                                   f"{tmp_path / 'gone' / 'x'}, which does not exist; give the path itself")
    (tmp_path / "notes.txt").write_text("mine\n")
    out = tmp_path / "notes.txt" / "out"
    return out, f"{out}: {tmp_path / 'notes.txt'} is a file, not a folder; give another path"


@pytest.mark.parametrize("kind", ["loop", "dangling", "through a file"])
@pytest.mark.parametrize("command", OUTPUT_OPTIONS)
def test_an_output_path_no_write_can_go_through_is_one_line(world, tmp_path, capsys, command, kind):
    """Issue 24.7: `--out` a symbolic link loop ended in `RuntimeError: Symlink loop`."""
    option, template = OUTPUT_OPTIONS[command]
    out, why = _odd_path(tmp_path, kind)
    before = sorted(p.name for p in tmp_path.iterdir()), _hashes(tmp_path)
    args = [str(out) if a == "OUT" else a.format(root=world) for a in template]
    line = _refused(dlcvkit_here(capsys, *args))
    assert line == f"dlcvkit: error: {option} {why}"
    assert (sorted(p.name for p in tmp_path.iterdir()), _hashes(tmp_path)) == before  # nothing written


def test_an_output_that_is_a_symbolic_link_to_an_input_file_is_refused(world, tmp_path, capsys):
    labels = tmp_path / "labels"
    shutil.copytree(world / "seg", labels)
    link = tmp_path / "miou.json"
    link.symlink_to(labels / "0000_mask.png")
    before = _hashes(labels)
    line = _refused(dlcvkit_here(capsys, "eval", "seg", "--pred", world / "seg", "--labels", labels, "--json", link,
                                 "--overwrite"))
    assert line.startswith(f"dlcvkit: error: --json {link} is a file of the input folder --labels")
    assert _hashes(labels) == before
