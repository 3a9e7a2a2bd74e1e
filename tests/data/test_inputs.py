"""Every input read the same way and checked before a run folder exists (issue 12, inputs), through the real CLI:
class-index masks refused everywhere by default and read alike everywhere on request; labels outside the
classes named by file, CSV line or folder; bad pairs, headers and options refused before `--out` is created;
`predict --skip-bad` writing every good image; images of several sizes batched by size."""

import csv
import hashlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dlcvkit.config import load_recipe
from dlcvkit.data.images import write_image
from dlcvkit.data.masks import read_mask
from dlcvkit.data.synth import synth_cls, synth_officehome, synth_seg
from dlcvkit.engine.runlog import read_metrics
from dlcvkit.engine.weights import read_state_dict
from dlcvkit.tasks.classify import ClassifyRecipe
from dlcvkit.tasks.finetune import FinetuneRecipe
from tests.cli_runner import dlcvkit_here

SEG = """task = "segment"
[data]
img_size = 32
batch_size = 2
num_workers = 0
[model]
name = "fcn32s"
backbone = "test_resnet"
fcn_width = 8
[train]
epochs = 1
log_every = 1
"""

CLS = """task = "{task}"
[data]
img_size = 32
batch_size = 4
num_workers = 0
[model]
backbone = "test_resnet"
[aug]
preset = "flip"
[train]
epochs = 1
"""

JUNK = b"this is no image at all" * 4


def _run(*args):
    """The CLI in this process for module fixtures (no capsys there): fail with its output unless it succeeds."""
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO

    from dlcvkit.cli import main

    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    assert exited.value.code == 0, f"{args}: {out.getvalue()}\n{err.getvalue()}"
    return out.getvalue()


def _refused(result, *expected) -> str:
    """The contract of bad input: exit code 2, exactly one stderr line naming what is wrong, no traceback."""
    code, _, err = result
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith("dlcvkit: error: "), err
    for text in expected:
        assert str(text) in err, err
    return err


def _index_copy(colour_dir, index_dir, mode="L"):
    """The pairs of `colour_dir` with their masks stored as grey class ids (mode L), or as a palette PNG (P)."""
    index_dir.mkdir()
    for path in sorted(colour_dir.iterdir()):
        if path.name.endswith("_mask.png"):
            ids = read_mask(path).numpy()
            picture = Image.fromarray(ids) if mode == "L" else Image.open(path).convert("P")
            picture.save(index_dir / path.name)
        else:
            shutil.copy(path, index_dir / path.name)
    return index_dir


def _hashes(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def seg(tmp_path_factory, seg_data):
    """Colour pairs, the same pairs as class-index and palette masks, and a run trained on the colour ones."""
    root = tmp_path_factory.mktemp("inputs_seg")
    shutil.copytree(seg_data, root / "train")
    synth_seg(root / "val", n=3, size=32, seed=1)
    synth_seg(root / "other", n=3, size=32, seed=2)  # masks to score against val's, as predictions
    for name in ("train", "val", "other"):
        _index_copy(root / name, root / f"{name}_index")
    _index_copy(root / "val", root / "val_palette", mode="P")
    (root / "seg.toml").write_text(SEG)
    _run("segment", "-r", root / "seg.toml", "--data", root / "train", "--val", root / "val", "--out", root / "run")
    return root


@pytest.fixture(scope="module")
def index_run(seg):
    """The same run trained on the class-index copy of its data."""
    _run("segment", "-r", seg / "seg.toml", "--data", seg / "train_index", "--val", seg / "val_index",
         "--set", "data.mask_format=index", "--out", seg / "run_index")
    return seg / "run_index"


# ------------------------------------------------------------------------------------- class-index masks


def test_segment_refuses_class_index_masks_before_the_run_folder(seg, capsys, tmp_path):
    result = dlcvkit_here(capsys, "segment", "-r", seg / "seg.toml", "--data", seg / "train_index",
                          "--out", tmp_path / "run")
    _refused(result, seg / "train_index" / "0000_mask.png", "is a L image",
             "(data.mask_format of the recipe); if it holds class ids 0..6 as grey values, pass "
             "--set data.mask_format=index")
    assert not (tmp_path / "run").exists()


def test_segment_on_class_index_masks_trains_exactly_as_on_colour_masks(seg, index_run):
    colour, index = (read_state_dict(run / "model.safetensors") for run in (seg / "run", index_run))
    assert colour.keys() == index.keys() and all(torch.equal(colour[k], index[k]) for k in colour)
    val = [[r for r in read_metrics(run) if r.get("split") == "val"] for run in (seg / "run", index_run)]
    assert val[0] == val[1] and len(val[0]) == 1


def test_eval_seg_files_refuses_class_index_masks_by_default_and_scores_them_like_colour_ones(seg, capsys):
    code, colour, err = dlcvkit_here(capsys, "eval", "seg", "--pred", seg / "other", "--labels", seg / "val")
    assert code == 0, err
    args = ("eval", "seg", "--pred", seg / "other_index", "--labels", seg / "val_index")
    _refused(dlcvkit_here(capsys, *args), seg / "other_index" / "0000_mask.png", "--mask-format index")
    code, index, err = dlcvkit_here(capsys, *args, "--mask-format", "index")
    assert code == 0 and index == colour and "mean_iou: " in index, err
    code, palette, err = dlcvkit_here(capsys, "eval", "seg", "--pred", seg / "other", "--labels", seg / "val_palette")
    assert code == 0 and palette == colour, err  # a palette PNG is read by its colours


def test_eval_seg_files_index_format_refuses_colour_masks_and_ids_above_6(seg, capsys, tmp_path):
    _refused(dlcvkit_here(capsys, "eval", "seg", "--pred", seg / "other", "--labels", seg / "val_index",
                          "--mask-format", "index"), seg / "other" / "0000_mask.png", "RGB colour mask")
    labels = shutil.copytree(seg / "val_index", tmp_path / "labels")
    ids = np.asarray(Image.open(labels / "0001_mask.png")).copy()
    ids[3, 5:7] = 7
    Image.fromarray(ids).save(labels / "0001_mask.png")
    _refused(dlcvkit_here(capsys, "eval", "seg", "--pred", seg / "other_index", "--labels", labels,
                          "--mask-format", "index"), labels / "0001_mask.png", "2 pixels", "row 3, col 5")


def test_eval_seg_run_reads_masks_in_the_runs_format_or_the_option(seg, capsys):
    code, colour, err = dlcvkit_here(capsys, "eval", "seg", "--run", seg / "run", "--data", seg / "val")
    assert code == 0, err
    _refused(dlcvkit_here(capsys, "eval", "seg", "--run", seg / "run", "--data", seg / "val_index"),
             seg / "val_index" / "0000_mask.png", "--mask-format index")
    for data, option in (("val_index", ["--mask-format", "index"]), ("val_palette", [])):
        code, out, err = dlcvkit_here(capsys, "eval", "seg", "--run", seg / "run", "--data", seg / data, *option)
        assert code == 0 and out == colour, (data, err)


def test_eval_seg_run_defaults_to_the_mask_format_the_run_was_trained_on(seg, index_run, capsys):
    code, colour, err = dlcvkit_here(capsys, "eval", "seg", "--run", seg / "run", "--data", seg / "val")
    assert code == 0, err
    for data, option in (("val_index", []), ("val", ["--mask-format", "colour"])):
        code, out, err = dlcvkit_here(capsys, "eval", "seg", "--run", index_run, "--data", seg / data, *option)
        assert code == 0 and out == colour, (data, err)  # the two runs hold the same weights
    _refused(dlcvkit_here(capsys, "eval", "seg", "--run", index_run, "--data", seg / "val"),
             seg / "val" / "0000_mask.png", "RGB colour mask")


def test_a_mask_in_the_wrong_format_names_the_format_as_it_was_chosen(seg, index_run, capsys):
    """The fix named is the option that changes the format; the cause named is the one the user passed, or the
    run's recorded data.mask_format, or the default: never an option the user did not pass."""
    colour, index = seg / "val" / "0000_mask.png", seg / "val_index" / "0000_mask.png"
    to_index = "; if it holds class ids 0..6 as grey values, pass --mask-format index, else write it in the course's " \
               "colours"
    to_colour = ": grey class ids 0..6; for colour masks pass --mask-format colour"
    cases = [
        (("--run", index_run, "--data", seg / "val"), f"{colour} is a RGB colour mask, but the mask format is 'index' "
                                                      f"(data.mask_format of --run {index_run}){to_colour}"),
        (("--run", seg / "run", "--data", seg / "val", "--mask-format", "index"),
         f"{colour} is a RGB colour mask, but the mask format is 'index' (--mask-format index){to_colour}"),
        (("--run", seg / "run", "--data", seg / "val_index"), f"{index} is a L image, not an RGB colour mask, and the "
                                                              f"mask format is 'colour' (data.mask_format of --run "
                                                              f"{seg / 'run'}){to_index}"),
        (("--run", index_run, "--data", seg / "val_index", "--mask-format", "colour"),
         f"{index} is a L image, not an RGB colour mask, and the mask format is 'colour' (--mask-format colour, the "
         f"default){to_index}"),
        (("--pred", seg / "val_index", "--labels", seg / "val_index"),
         f"{index} is a L image, not an RGB colour mask, and the mask format is 'colour' (--mask-format colour, the "
         f"default){to_index}"),
    ]
    for args, expected in cases:
        code, _, err = dlcvkit_here(capsys, "eval", "seg", *args)
        assert code == 2 and err.splitlines() == [f"dlcvkit: error: mask {expected}"], (args, err)


def test_viz_mask_reads_class_index_masks_only_on_request(seg, capsys, tmp_path):
    image = seg / "val" / "0001_sat.jpg"
    code, _, err = dlcvkit_here(capsys, "viz", "mask", "--image", image, "--mask", seg / "val" / "0001_mask.png",
                                "--out", tmp_path / "colour.png")
    assert code == 0, err
    index_mask = seg / "val_index" / "0001_mask.png"
    _refused(dlcvkit_here(capsys, "viz", "mask", "--image", image, "--mask", index_mask, "--out", tmp_path / "x.png"),
             index_mask, "--mask-format index")
    assert not (tmp_path / "x.png").exists()
    code, _, err = dlcvkit_here(capsys, "viz", "mask", "--image", image, "--mask", index_mask, "--mask-format", "index",
                                "--out", tmp_path / "index.png")
    assert code == 0 and (tmp_path / "index.png").read_bytes() == (tmp_path / "colour.png").read_bytes(), err


# --------------------------------------------------------------------- pre-flight: before the run folder


def _mask_16(folder):
    Image.new("RGB", (16, 16)).save(folder / "0002_mask.png")


def _junk_image(folder):
    (folder / "0001_sat.jpg").write_bytes(JUNK)


@pytest.mark.parametrize("case, spoil, where, args, expected", [
    ("mask size", _mask_16, "train", [], ["0002_sat.jpg is 32x32", "0002_mask.png is 16x16"]),
    ("mask size in val", _mask_16, "val", [], ["0002_sat.jpg is 32x32", "0002_mask.png is 16x16"]),
    ("unreadable header", _junk_image, "train", [], ["cannot decode image", "0001_sat.jpg"]),
    ("track name", None, "val", ["--track", "0000,0042"], ["--track 0042"]),
    ("batch larger than the data", None, "train", ["--set", "data.batch_size=8"], ["4 samples", "data.batch_size=8"]),
])
def test_segment_checks_its_inputs_before_the_run_folder(seg, capsys, tmp_path, case, spoil, where, args, expected):
    data = {name: shutil.copytree(seg / name, tmp_path / name) for name in ("train", "val")}
    if spoil is not None:
        spoil(data[where])
    before = {name: _hashes(folder) for name, folder in data.items()}
    result = dlcvkit_here(capsys, "segment", "-r", seg / "seg.toml", "--data", data["train"], "--val", data["val"],
                          "--out", tmp_path / "run", *args)
    _refused(result, *expected)
    assert not (tmp_path / "run").exists()
    assert {name: _hashes(folder) for name, folder in data.items()} == before


def test_skip_bad_leaves_out_a_sample_whose_header_cannot_be_read(seg, capsys, tmp_path):
    train = shutil.copytree(seg / "train", tmp_path / "train")
    _junk_image(train)
    code, _, err = dlcvkit_here(capsys, "segment", "-r", seg / "seg.toml", "--data", train, "--out", tmp_path / "run",
                                "--set", "data.skip_bad=true", "--max-steps", 1)
    assert code == 0, err
    assert f"skipped 1 of 4 samples that cannot be decoded: {train / '0001_sat.jpg'}" in err
    assert (tmp_path / "run" / "model.safetensors").is_file()


# ------------------------------------------------------------------------------------------ labels


@pytest.fixture
def p1(tmp_path):
    synth_cls(tmp_path / "p1", n=6, size=32, classes=3)
    (tmp_path / "cls.toml").write_text(CLS.format(task="classify"))
    return tmp_path


@pytest.mark.parametrize("name, expected", [
    ("9999_0.png", ["9999_0.png has label 9999", "no training sample has label 3..9998", "model.num_classes"]),
    ("4_0.png", ["4_0.png has label 4", "no training sample has label 3:", "model.num_classes"]),
])
def test_a_p1_label_past_a_gap_is_named_not_made_a_class(p1, capsys, name, expected):
    shutil.copy(p1 / "p1" / "0_0.png", p1 / "p1" / name)
    result = dlcvkit_here(capsys, "classify", "-r", p1 / "cls.toml", "--data", p1 / "p1", "--out", p1 / "run")
    _refused(result, *expected)
    assert not (p1 / "run").exists()


def test_stated_num_classes_and_validation_labels_are_checked_before_the_run_folder(p1, capsys):
    shutil.copy(p1 / "p1" / "0_0.png", p1 / "p1" / "3_0.png")
    result = dlcvkit_here(capsys, "classify", "-r", p1 / "cls.toml", "--data", p1 / "p1", "--out", p1 / "run",
                          "--set", "model.num_classes=3")
    _refused(result, p1 / "p1" / "3_0.png", "has label 3, outside 0..2")
    assert not (p1 / "run").exists()
    synth_cls(p1 / "val", n=4, size=32, classes=4)  # holds class 3, which training does not know
    (p1 / "p1" / "3_0.png").unlink()
    result = dlcvkit_here(capsys, "classify", "-r", p1 / "cls.toml", "--data", p1 / "p1", "--val", p1 / "val",
                          "--out", p1 / "run")
    _refused(result, p1 / "val" / "3_0.png", "has label 3, outside 0..2")
    assert not (p1 / "run").exists()


@pytest.fixture
def office(tmp_path):
    synth_officehome(tmp_path / "office", n=20, size=32, classes=3)
    (tmp_path / "ft.toml").write_text(CLS.format(task="finetune"))
    return tmp_path


def _set_label(csv_path, row: int, label: int) -> tuple[int, str]:
    """Give data row `row` of an Office-Home CSV the label `label`; (its line number, its file name)."""
    rows = list(csv.reader(csv_path.open()))
    rows[row + 1][2] = str(label)
    with csv_path.open("w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return row + 2, rows[row + 1][1]


@pytest.mark.parametrize("split, label, expected", [
    ("train", 9999, "has label 9999, but no training sample has label 3..9998"),
    ("val", 7, "has label 7, outside 0..2"),
])
def test_finetune_names_the_csv_line_of_a_wrong_label(office, capsys, split, label, expected):
    line, name = _set_label(office / "office" / f"{split}.csv", 2, label)
    result = dlcvkit_here(capsys, "finetune", "-r", office / "ft.toml", "--data", office / "office",
                          "--out", office / "run")
    _refused(result, f"{office / 'office' / split}.csv line {line} ({name}) {expected}")
    assert not (office / "run").exists()


@pytest.mark.parametrize("name, classes", [("cls_p1_vgg16bn", 50), ("cls_p1_resnet50", 50),
                                           ("finetune_officehome", 65)])
def test_real_recipes_state_their_classes(name, classes):

    recipe_cls = FinetuneRecipe if name.startswith("finetune") else ClassifyRecipe
    recipe = load_recipe(name, recipe_cls)  # the recipe shipped with the package
    assert recipe.model.num_classes == classes


# ------------------------------------------------------------------------------ prediction: --skip-bad, sizes


def _sat_folder(folder, sizes, seed=3):
    """`NNNN_sat.jpg` images of the given (height, width) sizes."""
    generator = torch.Generator().manual_seed(seed)
    for k, (h, w) in enumerate(sizes):
        write_image(folder / f"{k:04d}_sat.jpg", torch.randint(0, 256, (3, h, w), generator=generator,
                                                               dtype=torch.uint8))
    return folder


def _masks(folder) -> dict:
    return {p.name: read_mask(p) for p in sorted(folder.glob("*_mask.png"))}


def test_predict_seg_skip_bad_writes_every_good_mask_and_names_the_bad_image(seg, capsys, tmp_path):
    images = _sat_folder(tmp_path / "images", [(32, 32)] * 5)
    clean = shutil.copytree(images, tmp_path / "clean")
    (clean / "0003_sat.jpg").unlink()
    (images / "0003_sat.jpg").write_bytes(JUNK)
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", seg / "run", "--images", clean, "--out",
                                tmp_path / "expected")
    assert code == 0, err
    result = dlcvkit_here(capsys, "predict", "seg", "--run", seg / "run", "--images", images, "--out",
                          tmp_path / "out", "--skip-bad")
    _refused(result, f"skipped 1 of 5 images that cannot be decoded: {images / '0003_sat.jpg'}")
    written = _masks(tmp_path / "out")
    expected = _masks(tmp_path / "expected")
    assert list(written) == ["0000_mask.png", "0001_mask.png", "0002_mask.png", "0004_mask.png"] == list(expected)
    assert all(torch.equal(written[name], expected[name]) for name in written)
    # without --skip-bad the unreadable header stops it before the output folder is made
    _refused(dlcvkit_here(capsys, "predict", "seg", "--run", seg / "run", "--images", images, "--out",
                          tmp_path / "none"), images / "0003_sat.jpg")
    assert not (tmp_path / "none").exists()


def test_predict_seg_batches_mixed_sizes_like_each_image_alone(seg, capsys, tmp_path):
    sizes = [(32, 32), (48, 40), (32, 32), (48, 40), (24, 64)]
    images = _sat_folder(tmp_path / "images", sizes)
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", seg / "run", "--images", images, "--out",
                                tmp_path / "out", "--batch-size", 2)
    assert code == 0, err
    together = _masks(tmp_path / "out")
    assert [tuple(m.shape) for m in together.values()] == sizes
    for k in range(len(sizes)):
        alone = tmp_path / f"alone_{k}"
        alone.mkdir()
        shutil.copy(images / f"{k:04d}_sat.jpg", alone)
        code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", seg / "run", "--images", alone, "--out",
                                    alone / "out", "--batch-size", 1)
        assert code == 0, err
        assert torch.equal(_masks(alone / "out")[f"{k:04d}_mask.png"], together[f"{k:04d}_mask.png"])


def test_eval_seg_run_on_mixed_sizes_scores_what_predict_writes(seg, capsys, tmp_path):
    data = shutil.copytree(seg / "val", tmp_path / "data")
    big = tmp_path / "big"
    synth_seg(big, n=2, size=48, seed=5)
    for name in ("0000_sat.jpg", "0000_mask.png", "0001_sat.jpg", "0001_mask.png"):
        shutil.copy(big / name, data / name.replace("000", "010"))
    code, direct, err = dlcvkit_here(capsys, "eval", "seg", "--run", seg / "run", "--data", data, "--batch-size", 2)
    assert code == 0, err
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", seg / "run", "--images", data, "--out",
                                tmp_path / "pred", "--batch-size", 2)
    assert code == 0, err
    code, from_files, err = dlcvkit_here(capsys, "eval", "seg", "--pred", tmp_path / "pred", "--labels", data)
    assert code == 0 and direct == from_files, err


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory, cls_data):
    root = tmp_path_factory.mktemp("inputs_cls")
    (root / "cls.toml").write_text(CLS.format(task="classify"))
    _run("classify", "-r", root / "cls.toml", "--data", cls_data, "--out", root / "run")
    return root / "run"


def _predictions(path) -> list[tuple[str, str]]:
    return [tuple(row) for row in csv.reader(path.open())]


def test_predict_cls_skip_bad_writes_every_good_row_and_names_the_bad_image(cls_run, capsys, tmp_path):
    images = tmp_path / "images"
    synth_cls(images, n=5, size=32, classes=2, seed=4)
    clean = shutil.copytree(images, tmp_path / "clean")
    (clean / "1_0.png").unlink()
    (images / "1_0.png").write_bytes(JUNK)
    code, _, err = dlcvkit_here(capsys, "predict", "cls", "--run", cls_run, "--images", clean, "--out",
                                tmp_path / "expected.csv", "--workers", 0)
    assert code == 0, err
    result = dlcvkit_here(capsys, "predict", "cls", "--run", cls_run, "--images", images, "--out",
                          tmp_path / "out.csv", "--workers", 0, "--skip-bad")
    _refused(result, f"skipped 1 of 5 images that cannot be decoded: {images / '1_0.png'}")
    assert _predictions(tmp_path / "out.csv") == _predictions(tmp_path / "expected.csv")
    assert len(_predictions(tmp_path / "out.csv")) == 5  # header + the 4 good images


def test_classification_reads_mixed_sizes_at_the_runs_size(cls_run, capsys, tmp_path):
    data = tmp_path / "data"
    synth_cls(data, n=4, size=32, classes=2, seed=6)
    synth_cls(tmp_path / "big", n=2, size=48, classes=2, seed=7)
    for name in ("0_0.png", "1_0.png"):
        shutil.copy(tmp_path / "big" / name, data / name.replace("_0", "_5"))
    code, out, err = dlcvkit_here(capsys, "eval", "cls", "--run", cls_run, "--data", data, "--workers", 0)
    assert code == 0 and "(" in out and "/6)" in out, err
    code, _, err = dlcvkit_here(capsys, "predict", "cls", "--run", cls_run, "--images", data, "--out",
                                tmp_path / "p.csv", "--workers", 0)
    assert code == 0 and len(_predictions(tmp_path / "p.csv")) == 7, err
