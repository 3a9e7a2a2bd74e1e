"""Mask colours: the course's thresholding reader, the palette, red pixels, file round trips."""

import numpy as np
import pytest
import torch

from dlcvkit.data.images import read_image, resize_image, resize_mask, write_image
from dlcvkit.data.masks import (
    NUM_CLASSES,
    PALETTE,
    classes_to_rgb,
    read_mask,
    rgb_to_classes,
    write_mask,
)
from dlcvkit.errors import DlcvkitError


def pixels(*colours):
    """A 1 x len(colours) RGB image `3 1 w`."""
    return torch.tensor(colours, dtype=torch.uint8).T[:, None, :]


def test_palette_round_trip_all_classes():
    ids = torch.arange(NUM_CLASSES, dtype=torch.uint8).repeat(3, 2)  # 3 x 14
    rgb = classes_to_rgb(ids)
    assert rgb.shape == (3, 3, 14) and rgb.dtype == torch.uint8
    assert torch.equal(rgb[:, 0, :7].T, PALETTE)
    assert torch.equal(rgb_to_classes(rgb), ids)


def test_course_colours_in_id_order():
    expected = [(0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)]
    assert PALETTE.tolist() == [list(c) for c in expected]


def test_threshold_is_128_per_channel():
    rgb = pixels((200, 130, 127), (127, 255, 255), (128, 128, 128), (127, 127, 127), (128, 0, 128), (0, 127, 128))
    assert rgb_to_classes(rgb).tolist() == [[1, 0, 5, 6, 2, 4]]


def test_red_is_rejected_with_file_and_count(tmp_path):
    rgb = pixels((0, 255, 255), (255, 0, 0), (250, 10, 5), (0, 0, 0))
    path = tmp_path / "0007_mask.png"
    write_image(path, rgb)
    with pytest.raises(DlcvkitError) as error:
        read_mask(path)
    message = str(error.value)
    assert "0007_mask.png" in message and "2 red" in message and "col 1" in message and "--red-as" in message
    assert "\n" not in message


def test_red_as_maps_red_pixels():
    rgb = pixels((255, 0, 0), (0, 0, 255), (255, 0, 0))
    assert rgb_to_classes(rgb, red_as=6).tolist() == [[6, 4, 6]]
    with pytest.raises(DlcvkitError, match="--red-as"):
        rgb_to_classes(rgb, red_as=7)


def test_ids_outside_range_cannot_be_coloured():
    with pytest.raises(DlcvkitError, match="0..6"):
        classes_to_rgb(torch.tensor([[0, 7]], dtype=torch.uint8))


def test_write_mask_read_mask_round_trip(tmp_path):
    ids = torch.randint(0, NUM_CLASSES, (24, 40), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    write_mask(tmp_path / "sub" / "m.png", ids)
    assert torch.equal(read_mask(tmp_path / "sub" / "m.png"), ids)
    with pytest.raises(DlcvkitError, match="PNG|png"):
        write_mask(tmp_path / "m.jpg", ids)


def test_corrupt_and_truncated_images_name_the_file(tmp_path):
    img = torch.randint(0, 256, (3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    write_image(tmp_path / "good.jpg", img)
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"this is not a png" * 8)
    assert read_image(tmp_path / "good.jpg").shape == (3, 32, 32)
    for name in ("cut.jpg", "junk.png", "missing.png"):
        with pytest.raises(DlcvkitError, match=name) as error:
            read_image(tmp_path / name)
        assert "cannot decode image" in str(error.value) and ".cpp" not in str(error.value)


def test_resize_keeps_dtype_and_mask_ids():
    img = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    assert resize_image(img, 32).shape == (3, 32, 32) and resize_image(img, 32).dtype == torch.uint8
    assert resize_image(img, (16, 24)).shape == (3, 16, 24)
    assert resize_image(img, 64) is img
    mask = torch.tensor([[0, 3], [5, 6]], dtype=torch.uint8)
    big = resize_mask(mask, 8)
    assert big.shape == (8, 8) and set(big.unique().tolist()) == {0, 3, 5, 6}
    assert big[0, 0] == 0 and big[7, 7] == 6


def test_index_masks_hold_the_ignored_label_only_when_asked(tmp_path):
    from PIL import Image

    path = tmp_path / "0003_mask.png"
    Image.fromarray(np.array([[0, 255, 6], [255, 2, 255]], dtype=np.uint8), mode="L").save(path)
    assert read_mask(path, mask_format="index", ignore_index=255).tolist() == [[0, 255, 6], [255, 2, 255]]
    with pytest.raises(DlcvkitError) as refused:  # unset: 255 is a value of no class, as before
        read_mask(path, mask_format="index")
    assert str(refused.value) == (f"{path}: 3 pixels with values above the class ids 0..6 (up to 255, first at row 0, "
                                  "col 1); a class-index mask holds one id per pixel: fix the file")
    Image.fromarray(np.array([[0, 255, 7], [254, 2, 255]], dtype=np.uint8), mode="L").save(path)
    with pytest.raises(DlcvkitError) as refused:  # other ids above 6 are still refused, naming the file
        read_mask(path, mask_format="index", ignore_index=255)
    assert str(refused.value) == (f"{path}: 2 pixels with values above the class ids 0..6 or the ignored label 255 "
                                  "(data.ignore_index) (up to 254, first at row 0, col 2); a class-index mask holds "
                                  "one id per pixel: fix the file")
