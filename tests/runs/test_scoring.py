"""`dlcvkit eval seg --pred --labels`: the course's mean IoU against hand-computed masks and an independent copy
of the course's script, its exact printout, pairing by name, and clear errors for bad mask files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dlcvkit.data.masks import PALETTE, read_mask, write_mask
from tests.cli_runner import dlcvkit_here

# Two 2x3 images. Pixel (0, 2) of "a" is Unknown (6) predicted Urban (0): a false positive of Urban, as the
# course counts it. Counts over both images (P predicted, L labelled, TP both):
#   Urban 0       P 3, L 2, TP 1 -> 1/4      Forest 3   P 2, L 1, TP 1 -> 1/2
#   Agriculture 1 P 3, L 2, TP 2 -> 2/3      Water 4    P 1, L 1, TP 1 -> 1
#   Rangeland 2   P 1, L 2, TP 1 -> 1/2      Barren 5   P 1, L 2, TP 1 -> 1/2
# mean = (1/4 + 2/3 + 1/2 + 1/2 + 1 + 1/2) / 6 = 41/72 = 0.569444...
LABELS = {"a": [[0, 0, 6], [1, 1, 6]], "b": [[2, 2, 3], [4, 5, 5]]}
PREDS = {"a": [[0, 1, 0], [1, 1, 6]], "b": [[2, 3, 3], [4, 5, 0]]}
EXPECTED = (
    "class #0 : 0.25000\nclass #1 : 0.66667\nclass #2 : 0.50000\nclass #3 : 0.50000\nclass #4 : 1.00000\n"
    "class #5 : 0.50000\n\nmean_iou: 0.569444\n\n"
)


def _write(folder: Path, masks: dict) -> Path:
    for name, ids in masks.items():
        write_mask(folder / f"{name}_mask.png", torch.tensor(ids, dtype=torch.uint8))
    return folder



@pytest.fixture
def hand(tmp_path):
    return _write(tmp_path / "pred", PREDS), _write(tmp_path / "labels", LABELS)


def test_hand_computed_counts_over_the_whole_set_with_unknown_not_ignored(hand, tmp_path):
    pred, labels = hand
    (labels / "a_sat.jpg").write_bytes(b"")  # satellite images beside the labels are not masks: not paired
    proc = subprocess.run([sys.executable, "-m", "dlcvkit", "eval", "seg", "--pred", pred, "--labels", labels,
                           "--json", tmp_path / "iou.json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == EXPECTED
    numbers = json.loads((tmp_path / "iou.json").read_text())
    assert numbers["iou"] == pytest.approx([1 / 4, 2 / 3, 1 / 2, 1 / 2, 1, 1 / 2])
    assert numbers["mean_iou"] == pytest.approx(41 / 72)
    assert numbers["pixels"] == 12 and numbers["absent_classes"] == []


def _course_script(pred_dir: Path, label_dir: Path) -> str:
    """The course's mean_iou_evaluate.py, re-implemented with PIL and numpy (independent of dlcvkit's readers)."""
    def read_masks(folder):
        files = sorted(p for p in folder.iterdir() if p.suffix == ".png")
        masks = np.empty((len(files), *np.asarray(Image.open(files[0])).shape[:2]), dtype=np.int64)
        for i, f in enumerate(files):
            m = (np.asarray(Image.open(f).convert("RGB")) >= 128).astype(int)
            m = 4 * m[:, :, 0] + 2 * m[:, :, 1] + m[:, :, 2]
            for code, cls in ((3, 0), (6, 1), (5, 2), (2, 3), (1, 4), (7, 5), (0, 6)):
                masks[i, m == code] = cls
        return masks

    pred, labels = read_masks(pred_dir), read_masks(label_dir)
    text, mean_iou = "", 0.0
    for i in range(6):
        tp_fp, tp_fn = np.sum(pred == i), np.sum(labels == i)
        tp = np.sum((pred == i) * (labels == i))
        iou = tp / (tp_fp + tp_fn - tp)
        mean_iou += iou / 6
        text += "class #%d : %1.5f\n" % (i, iou)
    return text + "\nmean_iou: %f\n\n" % mean_iou


def test_same_digits_as_the_course_script_on_noisy_colour_masks(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for folder, seed_shift in (("pred", 0), ("labels", 1)):
        (tmp_path / folder).mkdir()
        for k in range(5):
            ids = rng.integers(0, 7, (24, 40)) if folder == "labels" or k % 2 else np.zeros((24, 40), int)
            rgb = PALETTE.numpy()[ids].astype(int)
            rgb = np.where(rgb > 127, rng.integers(128, 256, rgb.shape), rng.integers(0, 128, rgb.shape))
            Image.fromarray(rgb.astype(np.uint8)).save(tmp_path / folder / f"{k:04d}_mask.png")
    code, out, err = dlcvkit_here(capsys, "eval", "seg", "--pred", tmp_path / "pred", "--labels", tmp_path / "labels")
    assert code == 0, err
    assert out == _course_script(tmp_path / "pred", tmp_path / "labels")


def test_absent_class_is_nan_with_a_note_or_skipped_on_request(tmp_path, capsys):
    ids = {"x": [[0, 1, 2], [3, 5, 6]]}  # no Water (4) anywhere
    pred, labels = _write(tmp_path / "p", ids), _write(tmp_path / "l", ids)
    code, out, err = dlcvkit_here(capsys, "eval", "seg", "--pred", pred, "--labels", labels)
    assert code == 0
    assert "class #4 : nan\n" in out and "mean_iou: nan\n" in out and "class #3 : 1.00000\n" in out
    assert "class #4 (Water)" in err and "nan" in err
    code, out, err = dlcvkit_here(capsys, "eval", "seg", "--pred", pred, "--labels", labels, "--absent", "skip")
    assert code == 0 and "class #4 : nan\n" in out and "mean_iou: 1.000000\n" in out


def test_files_are_paired_by_name(hand, capsys):
    pred, labels = hand
    (pred / "a_mask.png").rename(pred / "c_mask.png")  # sorted positions would still pair c with a
    code, _, err = dlcvkit_here(capsys, "eval", "seg", "--pred", pred, "--labels", labels)
    assert code == 2 and "c_mask.png" in err and "no file of the same name" in err
    (pred / "c_mask.png").unlink()
    code, _, err = dlcvkit_here(capsys, "eval", "seg", "--pred", pred, "--labels", labels)
    assert code == 2 and "a_mask.png" in err and str(labels) in err


def test_size_grey_and_red_masks_are_clear_errors(hand, capsys):
    pred, labels = hand
    write_mask(pred / "a_mask.png", torch.zeros(4, 3, dtype=torch.uint8))
    code, _, err = dlcvkit_here(capsys, "eval", "seg", "--pred", pred, "--labels", labels)
    assert code == 2 and "3x4" in err and "3x2" in err and err.count("\n") == 1

    Image.fromarray(np.zeros((2, 3), np.uint8)).save(pred / "a_mask.png")  # a class-index PNG, mode L
    code, _, err = dlcvkit_here(capsys, "eval", "seg", "--pred", pred, "--labels", labels)
    assert code == 2 and "a_mask.png is a L image, not an RGB colour mask" in err

    red = np.zeros((2, 3, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(pred / "a_mask.png")
    code, _, err = dlcvkit_here(capsys, "eval", "seg", "--pred", pred, "--labels", labels)
    assert code == 2 and "red" in err and "--red-as" in err
    code, out, _ = dlcvkit_here(capsys, "eval", "seg", "--pred", pred, "--labels", labels, "--red-as", 6)
    assert code == 0 and "mean_iou" in out


def test_one_form_at_a_time(hand, tmp_path, capsys):
    pred, labels = hand
    code, _, err = dlcvkit_here(capsys, "eval", "seg", "--pred", pred, "--labels", labels, "--run", tmp_path)
    assert code == 2 and "either --pred DIR --labels DIR, or --run RUN_DIR [--data DIR]" in err
    code, _, err = dlcvkit_here(capsys, "eval", "seg", "--pred", pred)
    assert code == 2 and "--pred and --labels go together" in err


def test_rgb_mask_round_trip_in_course_colours_and_palette_pngs(tmp_path):
    ids = torch.arange(7, dtype=torch.uint8).repeat(3, 2)
    write_mask(tmp_path / "m_mask.png", ids)
    on_disk = Image.open(tmp_path / "m_mask.png")
    assert on_disk.mode == "RGB"
    assert np.array_equal(np.asarray(on_disk)[0, :7], PALETTE.numpy())
    assert torch.equal(read_mask(tmp_path / "m_mask.png"), ids)
    palette_png = on_disk.convert("P", palette=Image.Palette.ADAPTIVE, colors=7)  # indexed-colour PNGs are colours
    palette_png.save(tmp_path / "p_mask.png")
    assert torch.equal(read_mask(tmp_path / "p_mask.png"), ids)
