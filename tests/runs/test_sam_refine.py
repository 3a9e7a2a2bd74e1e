"""`dlcvkit sam`: a tiny Segment Anything (the package's own model classes, random weights, a local checkpoint)
run end to end on two small images; the majority-vote painting and the overlay on hand-made regions; loading
checkpoints safely with one-line errors; `--refine-run` masks that `dlcvkit eval seg` reads."""

import re
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator, sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from dlcvkit.data.images import read_image, write_image
from dlcvkit.data.masks import read_mask, write_mask
from dlcvkit.data.synth import synth_seg
from dlcvkit.engine.weights import read_state_dict, save_weights
from dlcvkit.errors import DlcvkitError
from dlcvkit.models.sam import load_sam
from dlcvkit.runs.load import load_run
from dlcvkit.runs.sam_refine import Regions, paint_regions, read_regions, region_overlay, write_regions
from dlcvkit.tasks.segment import predict_masks
from tests.cli_runner import dlcvkit, dlcvkit_here

RECIPE = "demo_seg"  # a shipped recipe, by name
TINY_SIZE, TINY_PATCH, TINY_DIM = 64, 8, 32
# thresholds 0: random weights predict low IoUs and unstable masks; SAM's defaults would keep none
LOOSE = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


def tiny_sam(checkpoint=None) -> Sam:
    """SAM's architecture at toy size (64 px input, a 2-block ViT of width 32, one windowed and one global
    block as in the real encoders); a drop-in for a `sam_model_registry` builder."""
    assert checkpoint is None  # dlcvkit reads the weights itself
    grid = TINY_SIZE // TINY_PATCH
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=TINY_SIZE, patch_size=TINY_PATCH, embed_dim=TINY_DIM, depth=2, num_heads=2, mlp_ratio=2,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True, use_rel_pos=True, window_size=4,
            global_attn_indexes=[1], out_chans=TINY_DIM,
        ),
        prompt_encoder=PromptEncoder(embed_dim=TINY_DIM, image_embedding_size=(grid, grid),
                                     input_image_size=(TINY_SIZE, TINY_SIZE), mask_in_chans=4),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=TINY_DIM, mlp_dim=64, num_heads=2),
            transformer_dim=TINY_DIM, iou_head_depth=2, iou_head_hidden_dim=TINY_DIM,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()



@pytest.fixture
def tiny_registry(monkeypatch):
    monkeypatch.setitem(sam_model_registry, "vit_b", tiny_sam)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny SAM checkpoint (.pth, as the official ones), two P2 images with masks (one 64x64, one 48x80 crop:
    not square, so SAM pads it), and a tiny segmentation run trained for one step."""
    root = tmp_path_factory.mktemp("sam")
    torch.manual_seed(0)
    model = tiny_sam()
    torch.save(model.state_dict(), root / "tiny_sam.pth")
    synth = root / "synth"
    synth_seg(synth, n=2, size=64)
    images = root / "images"
    for name in ("0000", "0001"):
        image, mask = read_image(synth / f"{name}_sat.jpg"), read_mask(synth / f"{name}_mask.png")
        if name == "0001":  # 48x80: not square, so SAM resizes the long side to 64 and pads the short one
            image = torch.cat([image, image[:, :, :16].flip(-1)], dim=-1)[:, 8:56]
            mask = torch.cat([mask, mask[:, :16].flip(-1)], dim=-1)[8:56]
        write_image(images / f"{name}_sat.jpg", image)
        write_mask(images / f"{name}_mask.png", mask)
    run = root / "run"
    dlcvkit("segment", "--recipe", RECIPE, "--data", synth, "--out", run, "--max-steps", "1",
            "--set", "model.backbone=resnet10t", "--set", "model.fcn_width=16", "--set", "data.batch_size=2",
            "--set", "data.num_workers=0", "--set", "train.tensorboard=false")
    # one step leaves the segmenter predicting one class everywhere, which no region could change: sharpen its
    # class-score layers so that its classes vary across the image
    state = read_state_dict(run / "model.safetensors")
    save_weights({k: v * 30 if "score" in k else v for k, v in state.items()}, run / "model.safetensors")
    return {"root": root, "checkpoint": root / "tiny_sam.pth", "model": model, "images": images, "run": run}


# ------------------------------------------------------------------------------------- pure functions

# Hand-made class map (4x6) and three regions, given smallest first to show that the order is by area:
#   B (4 px) rows 2-3, cols 0-1: classes 3 3 3 3          -> 3
#   C (6 px) rows 1-2, cols 2-4: classes 2 1 1 / 2 2 5     -> 2 (3 votes of 6)
#   A (12 px) cols 0-2:          0 0 0 / 0 0 2 / 3 3 2 / 3 3 3: five 0s, five 3s -> 0 (a tie: the lower id)
# Painted A, then C, then B; the 8 pixels no region covers keep their class.
CLASSES = [[0, 0, 0, 1, 1, 1],
           [0, 0, 2, 1, 1, 1],
           [3, 3, 2, 2, 5, 5],
           [3, 3, 3, 2, 5, 5]]
PAINTED = [[0, 0, 0, 1, 1, 1],
           [0, 0, 2, 2, 2, 1],
           [3, 3, 2, 2, 2, 5],
           [3, 3, 0, 2, 5, 5]]


def _region(rows: slice, cols: slice, shape=(4, 6)) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[rows, cols] = True
    return mask


def test_majority_vote_painting_larger_regions_first_uncovered_pixels_kept():
    classes = torch.tensor(CLASSES, dtype=torch.uint8)
    b, c, a = _region(slice(2, 4), slice(0, 2)), _region(slice(1, 3), slice(2, 5)), _region(slice(None), slice(0, 3))
    painted = paint_regions(classes, torch.stack([b, c, a]))
    assert painted.dtype == torch.uint8
    assert painted.tolist() == PAINTED
    uncovered = ~(a | b | c)
    assert int(uncovered.sum()) == 8 and torch.equal(painted[uncovered], classes[uncovered])
    assert torch.equal(paint_regions(classes, torch.zeros((0, 4, 6), dtype=torch.bool)), classes)  # no regions


def test_overlay_tints_regions_outlines_them_and_leaves_the_rest():
    # a 4x4 region (tab20 colour 0, painted first) with a 1-pixel region on its corner (colour 1, on top)
    image = torch.full((3, 5, 6), 100, dtype=torch.uint8)
    small, large = _region(0, 0, (5, 6)), _region(slice(0, 4), slice(0, 4), (5, 6))
    picture = region_overlay(image, torch.stack([small, large]), alpha=0.5)
    blue, light_blue = (31, 119, 180), (174, 199, 232)  # matplotlib's tab20 colours 0 and 1
    # pixels of the large region whose 3x3 neighbourhood holds only that region are tinted; the others are outline
    tinted = {(0, 2), (1, 2), (2, 0), (2, 1), (2, 2)}
    for row in range(5):
        for col in range(6):
            got = tuple(picture[:, row, col].tolist())
            if (row, col) == (0, 0):
                assert got == light_blue
            elif (row, col) in tinted:
                assert got == tuple(round(50 + v / 2) for v in blue), (row, col)
            elif large[row, col]:
                assert got == blue, (row, col)
            else:
                assert got == (100, 100, 100), (row, col)


@pytest.mark.parametrize("n", [3, 0])
def test_regions_file_round_trip(tmp_path, n):
    # 13 columns: the bits of a row do not fill whole bytes
    generator = torch.Generator().manual_seed(0)
    regions = Regions(torch.rand((n, 5, 13), generator=generator) > 0.5, torch.rand(n), torch.rand(n),
                      torch.rand((n, 2)) * 13)
    write_regions(tmp_path / "r.npz", regions)
    back = read_regions(tmp_path / "r.npz")
    for field in ("masks", "predicted_iou", "stability_score", "point_coords"):
        assert torch.equal(getattr(back, field), getattr(regions, field)), field


# ------------------------------------------------------------------------------------- loading checkpoints


def test_checkpoint_loads_safely_into_the_registry_model(files, tiny_registry):
    model = load_sam(files["checkpoint"], "vit_b")
    expected = files["model"].state_dict()
    got = model.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])  # built on meta, all replaced
    assert torch.equal(model.pixel_mean.flatten(), torch.tensor([123.675, 116.28, 103.53]))
    assert not model.training


def test_checkpoint_type_is_read_from_the_file_and_mismatches_are_named(tmp_path, capsys):
    # the image encoder's width and block count tell the type: a vit_l-shaped file, tiny tensors elsewhere
    state = {"image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 1, 1)}
    state |= {f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(24)}
    torch.save(state, tmp_path / "looks_like_vit_l.pth")
    write_image(tmp_path / "0000_sat.jpg", torch.zeros((3, 8, 8), dtype=torch.uint8))
    code, stdout, stderr = dlcvkit_here(capsys, "sam", "--checkpoint", tmp_path / "looks_like_vit_l.pth", "--model-type",
                                "vit_b", "--images", tmp_path, "--out", tmp_path / "out")
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert "holds a vit_l model, not vit_b: pass --model-type vit_l" in stderr


def test_unofficial_or_foreign_checkpoints_are_refused_in_one_line(files, tmp_path):
    with pytest.raises(DlcvkitError, match=r"width 32 with 2 blocks, none of the official SAM models"):
        load_sam(files["checkpoint"])  # the tiny model is no official type
    with pytest.raises(DlcvkitError, match=r"width 32 with 2 blocks, none of the official"):
        load_sam(files["checkpoint"], "vit_h")
    with pytest.raises(DlcvkitError, match=r"is not a Segment Anything checkpoint"):
        load_sam(files["run"] / "model.safetensors")


def test_no_checkpoint_says_where_the_official_ones_are():
    proc = subprocess.run([sys.executable, "-m", "dlcvkit", "sam", "--images", "x", "--out", "y"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == "" and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    for hint in ("sam_vit_b_01ec64.pth", "sam_vit_l_0b3195.pth", "sam_vit_h_4b8939.pth",
                 "https://github.com/facebookresearch/segment-anything", "--checkpoint PATH"):
        assert hint in proc.stderr


# ------------------------------------------------------------------------------------- the command


def _reference_masks(model: Sam, image: torch.Tensor) -> np.ndarray:
    """The package's generator called directly, masks sorted by area (largest first), empty ones dropped."""
    generator = SamAutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0)
    records = sorted(generator.generate(image.permute(1, 2, 0).numpy()), key=lambda r: -r["area"])
    return np.stack([r["segmentation"] for r in records if r["area"] > 0])


def test_sam_writes_regions_and_overlay_per_image(files, tiny_registry, capsys, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = dlcvkit_here(capsys, "sam", "--checkpoint", files["checkpoint"], "--model-type", "vit_b",
                                "--images", files["images"], "--out", out, "--device", "cpu", *LOOSE)
    assert code == 0, stderr
    counts = []
    for name in ("0000", "0001"):
        image = read_image(files["images"] / f"{name}_sat.jpg")
        regions = read_regions(out / f"{name}_regions.npz")
        expected = _reference_masks(files["model"], image)
        assert regions.masks.shape == (len(expected), *image.shape[1:])
        assert np.array_equal(regions.masks.numpy(), expected)
        assert len(regions.predicted_iou) == len(regions.stability_score) == len(regions.point_coords) == len(expected)
        counts.append(len(expected))
        overlay = read_image(out / f"{name}_regions.png")
        covered = regions.masks.any(0)
        assert overlay.shape == image.shape and bool(covered.any())
        assert torch.equal(overlay[:, ~covered], image[:, ~covered])  # untouched outside every region
        assert not torch.equal(overlay[:, covered], image[:, covered])
    summary = re.search(r"sam: 2 images, ([\d.]+) masks per image \(min (\d+), max (\d+)\), [\d.]+ s per image", stdout)
    assert summary, stdout
    assert float(summary[1]) == pytest.approx(sum(counts) / 2, abs=0.05)
    assert (int(summary[2]), int(summary[3])) == (min(counts), max(counts))


def test_refine_run_writes_course_masks_that_eval_seg_compares(files, tiny_registry, capsys, tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = dlcvkit_here(capsys, "sam", "--checkpoint", files["checkpoint"], "--images", files["images"],
                                "--out", out, "--model-type", "vit_b", "--refine-run", files["run"], *LOOSE)
    assert code == 0, stderr
    recipe, _, segmenter = load_run(files["run"])  # the registry's loader: an independent way to the same model
    changed = pixels = 0
    for name in ("0000", "0001"):
        image = read_image(files["images"] / f"{name}_sat.jpg")
        alone = read_mask(out / "segmenter" / f"{name}_mask.png")
        assert torch.equal(alone, predict_masks(segmenter, image[None], recipe.data.img_size)[0].to(torch.uint8))
        refined = read_mask(out / "refined" / f"{name}_mask.png")
        regions = read_regions(out / f"{name}_regions.npz").masks
        assert torch.equal(refined, paint_regions(alone, regions))
        assert len(alone.unique()) > 1  # the regions have class boundaries to move
        changed += int((refined != alone).sum())
        pixels += alone.numel()
    assert changed > 0
    assert f"changed the class of {100 * changed / pixels:.2f}% of the pixels" in stdout
    for folder in ("segmenter", "refined"):
        code, stdout, stderr = dlcvkit_here(capsys, "eval", "seg", "--pred", out / folder, "--labels", files["images"],
                                    "--absent", "skip")
        assert code == 0 and re.search(r"^mean_iou: \d\.\d{6}$", stdout, re.MULTILINE), stderr
