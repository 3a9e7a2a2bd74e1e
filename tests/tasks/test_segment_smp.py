"""smp's decoders (unet, deeplabv3plus, fpn) in `dlcvkit segment`: every shipped segmentation recipe trains with
each of them (`--set model.name=...`, the other decoders' keys left alone), an img_size a decoder cannot take is
one line, and a tiny UNet run from the shipped recipe goes through EMA, tracked masks, exact mIoU (1 and 2
processes), `predict --tile`, `export` and `predict --onnx` with the masks of the PyTorch path."""

import numpy as np
import pytest
import torch
from PIL import Image

from dlcvkit.config import load_recipe
from dlcvkit.data.masks import PALETTE
from dlcvkit.data.synth import synth_seg
from dlcvkit.engine.weights import read_state_dict
from dlcvkit.models.segmenters import build_segmenter
from dlcvkit.recipes import names, shipped
from dlcvkit.tasks.segment import SegmentRecipe, SegmentTask
from tests.cli_runner import dlcvkit, dlcvkit_here
from tests.runs.test_export import _cli, predict_both_ways
from tests.runs.test_scoring import _course_script
from tests.tasks.test_segment import course_masks

SEG_RECIPES = [n for n in names() if n.startswith("seg_") or n == "demo_seg"]
SMP_NAMES = ["unet", "deeplabv3plus", "fpn"]
# a tiny encoder and size, offline: what the test changes in a shipped recipe; every other key stays the recipe's
SMALL = ["model.backbone=test_resnet", "model.pretrained=", "data.img_size=64"]


def test_the_shipped_recipes_include_one_per_smp_decoder():
    assert {"seg_unet_resnet34", "seg_deeplabv3plus_resnet50", "seg_fpn_resnet34"} <= set(SEG_RECIPES)
    assert len(SEG_RECIPES) == 8
    for name in SMP_NAMES:
        recipe = next(load_recipe(shipped(r), SegmentRecipe) for r in SEG_RECIPES if r.startswith(f"seg_{name}_"))
        assert recipe.model.name == name and recipe.data.img_size == 512 and recipe.model.pretrained == "hub"


@pytest.mark.parametrize("name", SMP_NAMES)
@pytest.mark.parametrize("recipe_name", SEG_RECIPES)
def test_every_shipped_seg_recipe_trains_with_each_smp_decoder(recipe_name, name):
    original = load_recipe(shipped(recipe_name), SegmentRecipe)
    recipe = load_recipe(shipped(recipe_name), SegmentRecipe, [f"model.name={name}", *SMALL])
    assert recipe.model.fcn_width == original.model.fcn_width  # left alone, not applied
    assert recipe.model.output_stride == original.model.output_stride
    task = SegmentTask(recipe)
    torch.manual_seed(0)
    model = task.build_model().train()
    batch = {"image": torch.randn(2, 3, 64, 64), "mask": torch.randint(0, 7, (2, 64, 64))}
    loss = task.loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and model.segmentation_head[0].weight.grad.abs().sum() > 0
    assert model.eval()(batch["image"]).shape == (2, 7, 64, 64)


@pytest.mark.parametrize(("overrides", "multiple"), [(["model.name=unet"], 32), (["model.name=fpn"], 32),
                                                      (["model.name=deeplabv3plus", "model.output_stride=8"], 8)])
def test_an_img_size_the_decoder_cannot_take_is_one_line_and_writes_nothing(seg_data, capsys, tmp_path, overrides,
                                                                             multiple):
    size = multiple + multiple // 2
    sets = [a for o in [*overrides, "model.backbone=test_resnet", f"data.img_size={size}"] for a in ("--set", o)]
    code, out, err = dlcvkit_here(capsys, "segment", "-r", "demo_seg", "--data", seg_data, "--out", tmp_path / "run",
                                  *sets)
    name = overrides[0].split("=")[1]
    assert (code, out) == (2, "")
    assert err == (f"dlcvkit: error: data.img_size={size} must be a multiple of {multiple} for model.name={name}, "
                   f"e.g. {multiple}\n")
    assert not (tmp_path / "run").exists()


def test_deeplabv3plus_takes_multiples_of_its_output_stride():
    recipe = load_recipe(shipped("seg_deeplabv3plus_resnet50"), SegmentRecipe, [*SMALL[:2], "data.img_size=48"])
    model = SegmentTask(recipe).build_model().eval()  # 48: a multiple of output_stride 16, not of 32
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 7, 48, 48)


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    """2 steps of the shipped UNet recipe (tiny encoder, 64 px, EMA, two tracked images), exported with its EMA."""
    root = tmp_path_factory.mktemp("unet")
    synth_seg(root / "train", n=4, size=64, seed=0)
    synth_seg(root / "val", n=5, size=64, seed=1)  # odd: 2 processes cannot split it evenly
    synth_seg(root / "test", n=3, size=80, seed=2)  # not the training size, larger than the --tile windows
    sets = [*SMALL, "data.batch_size=4", "data.num_workers=0", "train.epochs=2", "train.model_ema=0.5",
            "schedule.warmup_epochs=0", "optim.lr=0.01"]
    _cli("segment", "-r", "seg_unet_resnet34", "--data", root / "train", "--val", root / "val", "--out", root / "run",
         "--track", "0000,0003", *[a for s in sets for a in ("--set", s)])
    _cli("export", "--run", root / "run", "--out", root / "model.onnx", "--weights", "ema")
    return root


def test_unet_run_tracks_masks_and_keeps_an_ema(unet):
    for epoch in (1, 2):
        for name in ("0000", "0003"):
            mask = np.asarray(Image.open(unet / "run" / "track" / f"epoch_{epoch:03d}" / f"{name}_mask.png"))
            assert mask.shape == (64, 64, 3)
            assert {tuple(c) for c in mask.reshape(-1, 3)} <= {tuple(c) for c in PALETTE.tolist()}
    assert (unet / "run" / "track.png").is_file()
    last, ema = (read_state_dict(unet / "run" / f) for f in ("model.safetensors", "ema.safetensors"))
    assert last.keys() == ema.keys() and any(k.startswith("encoder.model.") for k in ema)
    assert not torch.equal(last["segmentation_head.0.weight"], ema["segmentation_head.0.weight"])


def test_eval_of_the_unet_equals_the_course_script_on_an_independent_prediction(unet, capsys):
    model = build_segmenter("unet", "test_resnet", 7)
    reference = course_masks(model, unet / "run" / "ema.safetensors", unet / "val", unet / "reference")
    code, out, err = dlcvkit_here(capsys, "eval", "seg", "--run", unet / "run", "--data", unet / "val",
                                  "--weights", "ema")
    assert code == 0, err
    assert out == _course_script(reference, unet / "val")


@pytest.mark.parametrize("tile", [[], ["--tile", 64, "--overlap", 16]])
def test_predict_onnx_of_the_unet_writes_the_masks_of_the_pytorch_path(unet, capsys, tile):
    predict_both_ways(capsys, unet / "run", unet / "model.onnx", unet / "test", unet / f"pred{len(tile)}", tile,
                      run_options=["--weights", "ema"])


@pytest.mark.slow
def test_two_processes_give_the_unets_miou_to_the_digit(unet, capsys):
    args = ["eval", "seg", "--run", unet / "run", "--data", unet / "val", "--batch-size", 2]
    code, one, err = dlcvkit_here(capsys, *args)
    assert code == 0, err
    assert dlcvkit("launch", "--procs", 2, "--", *args).stdout == one and "mean_iou: " in one
