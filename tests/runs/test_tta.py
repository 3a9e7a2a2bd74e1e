"""Test-time augmentation (`--tta` of `predict seg` and `eval seg --run`): the mean of the softmax over the image
and its three flips, against a hand loop over the model; plain for a flip-equivariant model; with `--tile`, each
window's TTA blended as without it; and the commands say that TTA was used."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from dlcvkit.cli import main
from dlcvkit.data.images import read_image
from dlcvkit.data.masks import PALETTE, read_mask
from dlcvkit.data.synth import synth_seg
from dlcvkit.models.segmenters import build_segmenter
from dlcvkit.runs.scoring import iou_report
from dlcvkit.runs.segment import load_segment_run
from dlcvkit.runs.slide import slide_masks
from dlcvkit.tasks.segment import TTA_NOTE, predict_masks, predict_probs
from tests.cli_runner import dlcvkit_here
from tests.runs.test_slide import RECIPE as SLIDE_RECIPE

# test_slide's one-epoch run on the smallest timm CNN (the [train] table is the recipe's last)
RECIPE = SLIDE_RECIPE.replace('"resnet18"', '"test_resnet"') + "tensorboard = false\n"


def hand_tta(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities `b c h w` of uint8 images at the model's input size: the softmax of the image, of its
    left-right, up-down and both flips, each flipped back, averaged."""
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
    x = (images / 255 - mean) / std
    with torch.no_grad():
        views = [model(x).softmax(1),
                 model(x.flip(3)).softmax(1).flip(3),
                 model(x.flip(2)).softmax(1).flip(2),
                 model(x.flip(2).flip(3)).softmax(1).flip(3).flip(2)]
    return sum(views) / 4


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_segmenter("fcn8s", "test_resnet", 7, fcn_width=16).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def test_tta_is_the_mean_of_the_four_flipped_predictions(model, images):
    probs = predict_probs(model, images, 32, tta=True)
    torch.testing.assert_close(probs, hand_tta(model, images))
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 32, 32))  # a mean of probabilities, not a sum
    assert not torch.allclose(probs, predict_probs(model, images, 32))  # this model is not flip-equivariant


def test_a_flip_equivariant_model_gives_its_plain_prediction(images):
    pointwise = nn.Conv2d(3, 7, 1).eval()  # a per-pixel function commutes with every flip
    torch.testing.assert_close(predict_probs(pointwise, images, 32, tta=True), predict_probs(pointwise, images, 32))
    assert torch.equal(predict_masks(pointwise, images, 32, tta=True), predict_masks(pointwise, images, 32))


def test_tiled_tta_blends_each_window_s_tta(model):
    image = torch.randint(0, 256, (1, 3, 56, 56), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    total, count = torch.zeros(7, 56, 56), torch.zeros(56, 56)
    for y in (0, 24):  # tile 32, overlap 8: stride 24, the last window at 56 - 32 = 24
        for x in (0, 24):
            total[:, y:y + 32, x:x + 32] += hand_tta(model, image[..., y:y + 32, x:x + 32])[0]
            count[y:y + 32, x:x + 32] += 1
    assert torch.equal(slide_masks(model, image, 32, True, 32, 8)[0], (total / count).argmax(0))
    # an image within one window: exactly the whole-image TTA
    assert torch.equal(slide_masks(model, image[..., :32, :32], 32, True, 32, 8),
                       predict_masks(model, image[..., :32, :32], 32, True))


@pytest.fixture(scope="module")
def run(tmp_path_factory, seg_data):
    """A one-step segmentation run, its data and a folder of 56x56 images."""
    root = tmp_path_factory.mktemp("tta")
    (root / "r.toml").write_text(RECIPE)
    with pytest.raises(SystemExit) as exited:  # in this process: a second Python would cost more than the step
        main(["segment", "-r", str(root / "r.toml"), "--data", str(seg_data), "--val", str(seg_data),
              "--out", str(root / "run"), "--max-steps", "1"])
    assert exited.value.code in (0, None)
    synth_seg(root / "big", n=2, size=56, seed=3)
    return root


def test_predict_tta_with_tile_writes_the_blended_tta_masks_and_says_so(run, capsys):
    out = run / "pred"
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", run / "run", "--images", run / "big", "--out", out,
                                "--tta", "--tile", 32, "--overlap", 8)
    assert code in (0, None), err
    assert err.endswith(f"wrote 2 masks to {out} ({TTA_NOTE})\n")
    _, model = load_segment_run(run / "run")
    for name in ("0000", "0001"):
        expected = slide_masks(model, read_image(run / "big" / f"{name}_sat.jpg")[None], 32, True, 32, 8)[0]
        assert np.array_equal(np.asarray(Image.open(out / f"{name}_mask.png")), PALETTE.numpy()[expected.numpy()])
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", run / "run", "--images", run / "big",
                                "--out", run / "plain")
    assert code in (0, None) and err.endswith(f"wrote 2 masks to {run / 'plain'}\n"), err


def test_eval_run_tta_says_so_in_its_note_and_json(run, capsys, seg_data):
    code, out, err = dlcvkit_here(capsys, "eval", "seg", "--run", run / "run", "--data", seg_data, "--tta",
                                  "--json", run / "tta.json")
    assert code == 0, err
    assert f"dlcvkit: note: {TTA_NOTE}\n" in err
    numbers = json.loads((run / "tta.json").read_text())
    assert numbers["tta"] is True and numbers["ignore_index"] is None
    # the digits of the hand TTA's predictions (the best weights are the one step's)
    _, model = load_segment_run(run / "run")
    matrix = np.zeros((7, 7), dtype=np.int64)
    for sat in sorted(seg_data.glob("*_sat.jpg")):
        pred = hand_tta(model, read_image(sat)[None])[0].argmax(0).numpy()
        np.add.at(matrix, (read_mask(sat.with_name(sat.name.replace("_sat.jpg", "_mask.png"))).numpy(), pred), 1)
    assert out == iou_report(torch.from_numpy(matrix))[0]


def test_tta_with_mask_files_is_refused(run, capsys, seg_data):
    code, _, err = dlcvkit_here(capsys, "eval", "seg", "--pred", seg_data, "--labels", seg_data, "--tta")
    assert code == 2 and err == ("dlcvkit: error: eval seg: --tta goes with --run (it predicts); --pred masks are "
                                 "scored as they are\n")
