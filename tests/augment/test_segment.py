"""Joint image + mask augmentation: masks follow their image exactly, class ids are never blended, parameters
are drawn per image."""

import torch

from dlcvkit.augment.segment import JointAugment
from dlcvkit.data.masks import PALETTE


def _blocky_batch(n: int = 16, size: int = 64, block: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of random 8x8 blocks of class ids, and images painted in each pixel's class colour."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 7, (n, size // block, size // block), generator=g, dtype=torch.uint8)
    ids = ids.repeat_interleave(block, 1).repeat_interleave(block, 2)
    return _paint(ids), ids


def _paint(ids: torch.Tensor) -> torch.Tensor:
    return PALETTE[ids.long()].permute(0, 3, 1, 2).float() / 255


def _colour_class(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(class id of the nearest palette colour, distance to it in 0..255 units) per pixel."""
    rgb = images.permute(0, 2, 3, 1)[..., None, :] * 255
    dist = (rgb - PALETTE.float()).norm(dim=-1)
    best = dist.min(dim=-1)
    return best.indices, best.values


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips and quarter turns of an `h w` array."""
    return [torch.rot90(v, k, (0, 1)) for v in (x, x.flip(1)) for k in range(4)]


def test_flips_and_quarter_turns_move_mask_and_image_together_exactly():
    torch.manual_seed(1)
    images, ids = _blocky_batch()
    out_images, out_ids = JointAugment(flips=True, rot90=True, size=64)(images, ids)
    assert out_ids.dtype == torch.uint8 and out_ids.shape == ids.shape
    colour, dist = _colour_class(out_images)
    assert dist.max() < 1.0  # pure palette colours: pixels moved, not interpolated
    assert torch.equal(colour, out_ids.long())
    for before, after in zip(ids, out_ids):  # each mask is one of the 8 symmetries of its original
        assert any(torch.equal(after, d) for d in _dihedral(before))


def test_parameters_are_drawn_per_image():
    torch.manual_seed(2)
    _, ids = _blocky_batch(n=1)
    batch = ids.repeat(16, 1, 1)
    _, out = JointAugment(flips=True, rot90=True, size=64)(_paint(batch), batch)
    distinct = {tuple(m.flatten().tolist()) for m in out}
    assert len(distinct) >= 4  # one shared draw for the batch would give a single result


def test_scale_crop_keeps_ids_unblended_and_aligned():
    torch.manual_seed(3)
    images, ids = _blocky_batch(block=16)
    out_images, out_ids = JointAugment(flips=False, rot90=False, scale_min=0.3, size=64)(images, ids)
    assert set(out_ids.unique().tolist()) <= set(ids.unique().tolist())  # nearest: no new or averaged ids
    assert not torch.equal(out_ids, ids)  # something was cropped
    colour, dist = _colour_class(out_images)
    pure = dist < 2.0  # bilinear image pixels (almost) wholly from one source pixel: nearest picks that one too
    assert pure.float().mean() > 0.8
    assert torch.equal(colour[pure], out_ids.long()[pure])


def test_nothing_enabled_is_the_identity():
    images, ids = _blocky_batch(n=2)
    out_images, out_ids = JointAugment(flips=False, rot90=False, scale_min=1.0)(images, ids)
    assert torch.equal(out_images, images) and torch.equal(out_ids, ids)


def test_every_band_of_a_multispectral_image_moves_with_its_mask():
    torch.manual_seed(2)
    _, ids = _blocky_batch(n=8)
    # 6 bands of raw values, band c = id x 100 + c: any band out of step with the mask shows
    images = ids.float()[:, None] * 100 + torch.arange(6.0)[None, :, None, None] + 1000
    out_images, out_ids = JointAugment(flips=True, rot90=True, size=64)(images, ids)
    assert out_images.shape == (8, 6, 64, 64)
    expected = out_ids.float()[:, None] * 100 + torch.arange(6.0)[None, :, None, None] + 1000
    # kornia turns by an affine warp, exact up to float rounding at the grid points (0.03 here); a band out of
    # step would be off by 1 or more
    torch.testing.assert_close(out_images, expected, atol=0.1, rtol=0)
