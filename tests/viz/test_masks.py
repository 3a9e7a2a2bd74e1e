"""`dlcvkit viz mask`: class colours blended inside regions, class boundaries drawn in full colour."""

import numpy as np
import torch
from PIL import Image

from dlcvkit.data.images import write_image
from dlcvkit.data.masks import PALETTE, write_mask
from dlcvkit.viz.masks import class_boundaries, overlay
from tests.cli_runner import dlcvkit_here


def test_boundaries_are_the_pixels_next_to_another_class():
    ids = torch.zeros(6, 6, dtype=torch.uint8)
    ids[:, 3:] = 4  # a vertical edge between columns 2 and 3
    edge = class_boundaries(ids)
    assert edge[:, 2:4].all() and not edge[:, :2].any() and not edge[:, 4:].any()
    assert class_boundaries(ids, width=2)[:, 1:5].all()
    assert not class_boundaries(torch.full((4, 4), 3, dtype=torch.uint8)).any()


def test_overlay_blends_inside_and_paints_edges():
    image = torch.full((3, 6, 6), 100, dtype=torch.uint8)
    ids = torch.zeros(6, 6, dtype=torch.uint8)
    ids[:, 3:] = 4
    out = overlay(image, ids, alpha=0.25)
    assert out[:, 0, 0].tolist() == [75, 139, 139]  # Urban cyan (0,255,255) at 25%: 0.75 x 100 + 0.25 x 255, rounded
    assert out[:, 0, 2].tolist() == PALETTE[0].tolist() and out[:, 0, 3].tolist() == PALETTE[4].tolist()


def test_viz_mask_command(tmp_path, capsys):
    image = torch.randint(0, 256, (3, 32, 48), dtype=torch.uint8)
    ids = torch.randint(0, 7, (32, 48), dtype=torch.uint8)
    write_image(tmp_path / "0001_sat.jpg", image)
    write_mask(tmp_path / "0001_mask.png", ids)
    code, _, err = dlcvkit_here(capsys, "viz", "mask", "--image", tmp_path / "0001_sat.jpg", "--mask",
                        tmp_path / "0001_mask.png", "--out", tmp_path / "view.png")
    assert code == 0, err
    picture = np.asarray(Image.open(tmp_path / "view.png"))
    assert picture.shape == (32, 48, 3)
    edge = class_boundaries(ids).numpy()
    assert np.array_equal(picture[edge], PALETTE.numpy()[ids.numpy()][edge])

    write_mask(tmp_path / "small_mask.png", ids[:16])
    code, _, err = dlcvkit_here(capsys, "viz", "mask", "--image", tmp_path / "0001_sat.jpg", "--mask",
                        tmp_path / "small_mask.png", "--out", tmp_path / "bad.png")
    assert code == 2 and "48x32" in err and "48x16" in err
