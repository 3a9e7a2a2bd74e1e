"""Sliding-window segmentation (`predict seg --tile --overlap`, dlcvkit/runs/slide.py): mmsegmentation's window
grid, one window equal to whole-image prediction, blended windows against an independent loop, mixed sizes."""

import hashlib
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from dlcvkit.cli import main
from dlcvkit.data.images import read_image
from dlcvkit.data.masks import PALETTE
from dlcvkit.data.synth import synth_seg
from dlcvkit.runs.segment import load_segment_run
from dlcvkit.runs.slide import slide_masks, window_starts
from dlcvkit.tasks.segment import predict_masks, predict_probs
from tests.cli_runner import dlcvkit_here

RECIPE = """task = "segment"
[data]
img_size = 32
batch_size = 4
num_workers = 0
[model]
name = "fcn8s"
backbone = "resnet18"
fcn_width = 16
[train]
epochs = 1
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, seg_data):
    """A segmentation run of one step, and a folder of 32x32, 48x48 and 80x80 images."""
    root = tmp_path_factory.mktemp("slide")
    shutil.copytree(seg_data, root / "train")
    (root / "r.toml").write_text(RECIPE)
    with pytest.raises(SystemExit) as exited:  # in this process: a second Python would cost more than the step
        main(["segment", "-r", str(root / "r.toml"), "--data", str(root / "train"), "--out", str(root / "run"),
              "--max-steps", "1"])
    assert exited.value.code in (0, None)
    mixed = root / "mixed"
    mixed.mkdir()
    for size, seed in ((32, 1), (48, 2), (80, 3)):
        synth_seg(root / f"s{size}", n=1, size=size, seed=seed)
        shutil.copy(root / f"s{size}" / "0000_sat.jpg", mixed / f"{size}_sat.jpg")
    return root


def test_window_grid_is_mmsegmentations():
    # count = max(L - tile + stride - 1, 0) // stride + 1; the last window moves back to end at the edge
    assert window_starts(100, 32, 24) == [0, 24, 48, 68]
    assert window_starts(96, 32, 32) == [0, 32, 64]
    assert window_starts(20, 32, 24) == [0]  # shorter than a window: one window of the whole side


def test_an_image_within_one_window_is_predicted_as_whole(run):
    _, model = load_segment_run(run / "run", "last")
    images = torch.stack([read_image(p) for p in sorted((run / "train").glob("*_sat.jpg"))])
    for tile, input_size in ((32, 32), (64, 32), (32, 64)):
        assert torch.equal(slide_masks(model, images, input_size, False, tile, 8),
                           predict_masks(model, images, input_size, False))


def test_overlapping_windows_average_the_probabilities_of_every_window(run):
    _, model = load_segment_run(run / "run", "last")
    image = read_image(run / "mixed" / "80_sat.jpg")[None]
    total, count = torch.zeros(7, 80, 80), torch.zeros(80, 80)
    for y in (0, 24, 48):  # tile 32, overlap 8: stride 24, the last window at 80 - 32 = 48
        for x in (0, 24, 48):
            total[:, y:y + 32, x:x + 32] += predict_probs(model, image[..., y:y + 32, x:x + 32], 32)[0]
            count[y:y + 32, x:x + 32] += 1
    assert count.min() == 1 and count.max() == 4
    expected = (total / count).argmax(0)
    for batch in (1, 3):  # windows run `batch` at a time: the same result
        assert torch.equal(slide_masks(model, image.expand(batch, -1, -1, -1), 32, False, 32, 8)[0], expected)


def test_predict_tiled_folder_of_mixed_sizes(run, capsys):
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", run / "run", "--images", run / "mixed",
                                "--out", run / "tiled", "--tile", 32, "--overlap", 8, "--weights", "last")
    assert code in (0, None), err
    palette = {tuple(c) for c in PALETTE.tolist()}
    for size in (32, 48, 80):
        mask = np.asarray(Image.open(run / "tiled" / f"{size}_mask.png"))
        assert mask.shape == (size, size, 3)
        assert {tuple(c) for c in mask.reshape(-1, 3)} <= palette
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", run / "run", "--images", run / "mixed",
                                "--out", run / "whole", "--weights", "last")
    assert code in (0, None), err
    same = (run / "tiled" / "32_mask.png").read_bytes() == (run / "whole" / "32_mask.png").read_bytes()
    assert same  # one window: the whole-image mask


@pytest.mark.parametrize("args, needle", [(["--tile", 32, "--overlap", 32], "--overlap 32 must be"),
                                          (["--overlap", 8], "--overlap goes with --tile"),
                                          (["--tile", -1], "--tile must be")])
def test_bad_tiling_is_one_line_and_writes_nothing(run, capsys, args, needle):
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.rglob("*") if p.is_file()}
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", run / "run", "--images", run / "mixed",
                                "--out", run / "bad", *args)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (run / "bad").exists()
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.rglob("*") if p.is_file()} == before
