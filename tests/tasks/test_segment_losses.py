"""`dlcvkit segment` with each `loss.name`, `loss.class_weights` and `data.ignore_index`: one-step runs on tiny
data, ignored pixels left out of the training-time and `eval seg --run` confusion matrix, bad values refused."""

import json
import math
import shutil

import numpy as np
import pytest
from PIL import Image

from dlcvkit.cli import main
from dlcvkit.data.masks import read_mask
from dlcvkit.engine.runlog import read_metrics
from dlcvkit.models.seg_losses import SEG_LOSSES
from tests.cli_runner import dlcvkit_here
from tests.runs.test_slide import RECIPE as SLIDE_RECIPE

# test_slide's one-epoch run on the smallest timm CNN (the [train] table is the recipe's last)
RECIPE = SLIDE_RECIPE.replace('"resnet18"', '"test_resnet"') + "tensorboard = false\n"
IGNORED_BLOCK = 8  # the top-left 8x8 pixels of every index mask are labelled 255


def _train(root, out, *sets):
    """RUN_DIR of `dlcvkit segment` with `--set` items, in this process (a second Python would cost more than the
    one step)."""
    with pytest.raises(SystemExit) as exited:
        main(["segment", "-r", str(root / "r.toml"), "--out", str(root / out),
              *(arg for item in sets for arg in ("--set", item))])
    assert exited.value.code in (0, None)
    return root / out


@pytest.fixture(scope="module")
def root(tmp_path_factory, seg_data):
    """The recipe, the colour data, and its copy as index masks with a 255 block."""
    root = tmp_path_factory.mktemp("seg_losses")
    (root / "r.toml").write_text(RECIPE.replace("[data]", f'[data]\ntrain = "{seg_data}"'))
    index = root / "index"
    index.mkdir()
    for sat in sorted(seg_data.glob("*_sat.jpg")):
        shutil.copy(sat, index / sat.name)
        ids = read_mask(sat.with_name(sat.name.replace("_sat.jpg", "_mask.png"))).numpy()
        ids[:IGNORED_BLOCK, :IGNORED_BLOCK] = 255
        Image.fromarray(ids, mode="L").save(index / sat.name.replace("_sat.jpg", "_mask.png"))
    return root


@pytest.fixture(scope="module")
def first_losses(root):
    """{loss name: the logged loss of its one-step run}: same seed, weights and batch for each."""
    return {name: read_metrics(_train(root, f"run_{name}", f"loss.name={name}"))[0]["loss"] for name in SEG_LOSSES}


def test_each_loss_name_trains_and_computes_its_own_loss(first_losses, root):
    assert all(math.isfinite(v) for v in first_losses.values())
    assert len(set(first_losses.values())) == len(SEG_LOSSES)  # five different functions of the same logits
    # the same initial model and batch: ce+dice is the sum of the ce and dice runs' losses
    assert first_losses["ce+dice"] == pytest.approx(first_losses["ce"] + first_losses["dice"], rel=1e-5)
    assert 'name = "lovasz"' in (root / "run_lovasz" / "recipe.toml").read_text()


def test_ignored_pixels_are_left_out_of_training_and_eval_miou(root, capsys):
    run = _train(root, "run_ignore", f'data.train="{root / "index"}"', f'data.val="{root / "index"}"',
                 "data.mask_format=index", "data.ignore_index=255", "loss.class_weights=[1, 1, 2, 1, 1, 1, 0.5]",
                 'viz.track=["0000"]')
    assert (run / "track.png").is_file()  # the ground truth's ignored pixels are drawn (as Unknown)
    code, out, err = dlcvkit_here(capsys, "eval", "seg", "--run", run, "--absent", "skip", "--json", root / "e.json")
    assert code == 0, err
    assert f"dlcvkit: note: pixels labelled 255 (data.ignore_index of --run {run}) are not counted\n" in err
    numbers = json.loads((root / "e.json").read_text())
    assert numbers["pixels"] == 4 * (32 * 32 - IGNORED_BLOCK ** 2)
    assert (numbers["ignore_index"], numbers["tta"]) == (255, False)
    val = [r for r in read_metrics(run) if r.get("split") == "val"][-1]
    assert f"mean_iou: {val['miou']:f}\n" in out  # the training-time validation left out the same pixels


def test_a_class_id_as_ignored_label_on_colour_masks(root, first_losses, capsys, seg_data):
    # the ce run of `first_losses`, its recipe now ignoring Unknown (6): eval counts every pixel but the black ones
    run = shutil.copytree(root / "run_ce", root / "run_unknown")
    recipe = (run / "recipe.toml").read_text()
    (run / "recipe.toml").write_text(recipe.replace("ignore_index = -1", "ignore_index = 6"))
    code, _, err = dlcvkit_here(capsys, "eval", "seg", "--run", run, "--data", seg_data, "--json", root / "u.json")
    assert code == 0, err
    black = sum(int((np.asarray(Image.open(p)).max(axis=2) < 128).sum()) for p in seg_data.glob("*_mask.png"))
    numbers = json.loads((root / "u.json").read_text())
    assert 0 < black and numbers["pixels"] == 4 * 32 * 32 - black and numbers["ignore_index"] == 6
    assert sum(numbers["confusion"][6]) == 0


@pytest.mark.parametrize("sets, message", [
    (["data.ignore_index=7"], "data.ignore_index=7: use a class id 0..6, 255 (index masks), or -1 (every pixel "
                              "counts)"),
    (["data.ignore_index=-2"], "data.ignore_index=-2: use a class id 0..6"),
    (["data.ignore_index=255"], "data.ignore_index=255 goes with data.mask_format='index' (grey masks whose 255 "
                                "pixels have no label); colour masks have no such value: use a class id 0..6 (e.g. "
                                "6 for Unknown), or -1"),
    (["loss.class_weights=[1, 2]"], "loss.class_weights has 2 values: give one per class (7, in class-id order), "
                                    "or [] for none"),
    (["loss.name=lovasz", "loss.class_weights=[1, 1, 1, 1, 1, 1, 1]"], "loss.class_weights do not apply to "
                                                                       "loss.name='lovasz'"),
    (["loss.class_weights=[1, 1, 1, 1, 1, 1, -1]"], "loss.class_weights=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0]: each "
                                                    "must be a finite number >= 0"),
    (["loss.name=bce"], "--set: recipe key 'loss.name' must be one of 'ce', 'dice', 'focal', 'lovasz', 'ce+dice', "
                        "got 'bce'"),
])
def test_bad_loss_and_ignore_values_are_one_line_before_the_run_folder(root, capsys, sets, message):
    code, _, err = dlcvkit_here(capsys, "segment", "-r", root / "r.toml", "--out", root / "bad",
                                *(arg for item in sets for arg in ("--set", item)))
    assert code == 2 and err.startswith(f"dlcvkit: error: {message}") and len(err.strip().splitlines()) == 1, err
    assert not (root / "bad").exists()
