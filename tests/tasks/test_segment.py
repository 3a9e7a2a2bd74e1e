"""`dlcvkit segment` on tiny synthetic data, then `eval seg --run` (1 vs 2 processes, against an independent
reference), `predict seg` (one course-coloured mask per image, at the image's size) and the tracked predictions."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from dlcvkit.data.masks import PALETTE
from dlcvkit.data.synth import synth_seg
from dlcvkit.engine.runlog import read_metrics
from dlcvkit.engine.weights import read_state_dict
from dlcvkit.models.segmenters import build_segmenter
from tests.cli_runner import dlcvkit, dlcvkit_here
from tests.runs.test_scoring import _course_script

TRACK = ["0000", "0003"]
RECIPE = """task = "segment"
[data]
img_size = 64
batch_size = 8
num_workers = 0
[model]
name = "fcn8s"
backbone = "resnet18"
fcn_width = 32
[optim]
lr = 0.002
[train]
epochs = 3
log_every = 2
keep_checkpoints = 1
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    synth_seg(root / "train", n=16, size=64, seed=0)
    synth_seg(root / "val", n=9, size=64, seed=1)  # odd: 2 processes cannot split it evenly
    (root / "r.toml").write_text(RECIPE)
    dlcvkit("segment", "-r", root / "r.toml", "--data", root / "train", "--val", root / "val", "--out", root / "run",
            "--track", ",".join(TRACK))
    return root


@pytest.fixture(scope="module")
def reference(run):
    """The last weights applied image by image in this process, written as colour masks with PIL/numpy."""
    model = build_segmenter("fcn8s", "resnet18", 7, fcn_width=32)
    return course_masks(model, run / "run" / "model.safetensors", run / "val", run / "reference")


def course_masks(model, weights, images, folder):
    """`model` with `weights` applied image by image (PIL, numpy) to the `*_sat.jpg` of `images`, written to
    `folder` as course-coloured masks."""
    model.load_state_dict(read_state_dict(weights))
    model.eval()
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
    folder.mkdir()
    for sat in sorted(images.glob("*_sat.jpg")):
        image = torch.from_numpy(np.asarray(Image.open(sat).convert("RGB")).copy()).permute(2, 0, 1)
        with torch.no_grad():
            ids = model(((image / 255 - mean) / std)[None])[0].argmax(0).numpy()
        Image.fromarray(PALETTE.numpy()[ids]).save(folder / sat.name.replace("_sat.jpg", "_mask.png"))
    return folder


def test_validation_logs_per_class_iou_and_keeps_the_best_by_miou(run):
    val = [r for r in read_metrics(run / "run") if r.get("split") == "val"]
    assert [r["epoch"] for r in val] == [1, 2, 3]
    classes = ["urban", "agriculture", "rangeland", "forest", "water", "barren"]
    for r in val:
        ious = [r[f"iou_{c}"] for c in classes]
        assert all(0 <= v <= 1 for v in ious)
        assert r["miou"] == pytest.approx(sum(ious) / 6)  # the 9 images hold all classes
    best = max(val, key=lambda r: r["miou"])
    with safe_open(run / "run" / "best.safetensors", "pt") as f:
        meta = f.metadata()
    assert float(meta["miou"]) == best["miou"] and int(meta["step"]) == best["step"]


def test_tracked_predictions_every_epoch_and_the_grid(run):
    for epoch in (1, 2, 3):
        for name in TRACK:
            mask = np.asarray(Image.open(run / "run" / "track" / f"epoch_{epoch:03d}" / f"{name}_mask.png"))
            assert mask.shape == (64, 64, 3)
            assert {tuple(c) for c in mask.reshape(-1, 3)} <= {tuple(c) for c in PALETTE.tolist()}
    grid = Image.open(run / "run" / "track.png")
    assert grid.width > grid.height  # 2 rows x (image, truth, epochs 1, 2, 3)


def test_eval_run_matches_the_course_script_on_an_independent_prediction(run, reference, capsys):
    code, out, err = dlcvkit_here(capsys, "eval", "seg", "--run", run / "run", "--data", run / "val", "--weights", "last")
    assert code == 0, err
    assert out == _course_script(reference, run / "val")
    last = [r for r in read_metrics(run / "run") if r.get("split") == "val"][-1]
    assert f"mean_iou: {last['miou']:f}\n" in out  # the training-time validation saw the same pixels


def test_two_processes_print_the_same_digits_on_an_odd_set(run, capsys):
    args = ["eval", "seg", "--run", run / "run", "--data", run / "val", "--batch-size", 2]
    code, one, err = dlcvkit_here(capsys, *args)
    assert code == 0, err
    two = dlcvkit("launch", "--procs", 2, "--", *args).stdout
    assert two == one and "mean_iou: " in one


def test_predict_writes_one_course_mask_per_image(run, reference, capsys):
    out = run / "pred"
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", run / "run", "--images", run / "val", "--out", out,
                        "--weights", "last", "--batch-size", 4)
    assert code == 0, err
    sats = sorted(p.name.replace("_sat.jpg", "_mask.png") for p in (run / "val").glob("*_sat.jpg"))
    assert sorted(p.name for p in out.iterdir()) == sats
    for name in sats:
        written = Image.open(out / name)
        assert written.mode == "RGB" and written.size == (64, 64)
        assert np.array_equal(np.asarray(written), np.asarray(Image.open(reference / name)))


def test_predict_at_each_image_own_size_with_flip_tta(run, capsys):
    synth_seg(run / "big", n=3, size=96, seed=5)
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", run / "run", "--images", run / "big", "--out",
                        run / "pred_big", "--tta")
    assert code == 0, err
    masks = sorted((run / "pred_big").iterdir())
    assert [p.name for p in masks] == ["0000_mask.png", "0001_mask.png", "0002_mask.png"]
    for path in masks:
        mask = np.asarray(Image.open(path))
        assert mask.shape == (96, 96, 3)
        assert {tuple(c) for c in mask.reshape(-1, 3)} <= {tuple(c) for c in PALETTE.tolist()}


def test_unknown_track_name_and_wrong_run_are_clear_errors(run, capsys):
    code, _, err = dlcvkit_here(capsys, "segment", "-r", run / "r.toml", "--data", run / "train", "--val", run / "val",
                        "--out", run / "bad", "--track", "0000,nope")
    assert code == 2 and "--track nope" in err and "0000" in err
    code, _, err = dlcvkit_here(capsys, "eval", "seg", "--run", run / "train", "--data", run / "val")
    assert code == 2 and "no recipe.toml" in err


def test_inference_needs_only_the_run_not_its_pretrained_weights(run, capsys):
    moved = run / "moved_run"  # e.g. copied to an offline machine without the ImageNet file used for training
    moved.mkdir()
    (moved / "model.safetensors").write_bytes((run / "run" / "model.safetensors").read_bytes())
    recipe = (run / "run" / "recipe.toml").read_text()
    assert 'pretrained = ""' in recipe
    (moved / "recipe.toml").write_text(recipe.replace('pretrained = ""', 'pretrained = "/missing/resnet18.pth"'))
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", moved, "--images", run / "val", "--out", run / "pred2")
    assert code == 0, err
    assert len(list((run / "pred2").iterdir())) == 9
