"""`read_resized`: JPEGs much larger than the target are decoded at a reduced DCT scale, within a stated tolerance
of the full decode + resize; everything else is decoded exactly as before."""

import pytest
import torch
from PIL import Image

from dlcvkit.bench.loader import photo_like
from dlcvkit.data.folders import UnlabeledFolder
from dlcvkit.data.images import _decode_reduced, _jpeg_size, read_image, read_resized, resize_image, write_image
from dlcvkit.errors import DlcvkitError

# The tolerance, in grey levels, on smooth photo-like images (measured: mean <= 0.6, max <= 5 from 480x640 to
# 3000x2000 sources, the worst where the reduced image is only a few pixels larger than the target). A reduction
# that lands exactly on the target size (no resize after it) gives mean 0.7-1.5, max 6-8 at 512 -> 256, 128, 64:
# those are never taken.
MEAN_TOLERANCE = 0.75
MAX_TOLERANCE = 6


def _bytes(path):
    """The file's bytes as `read_resized` hands them to the header reader and the reduced decode."""
    return memoryview(path.read_bytes())


def _full(path, size):
    return resize_image(read_image(path), size)


@pytest.mark.parametrize("height, width, size, reduced", [
    (512, 512, 128, (256, 256)),  # 1/2: 1/4 would land exactly on the target
    (512, 512, 64, (128, 128)),  # 1/4, not 1/8 (64 x 64, the target itself)
    (480, 640, 64, (120, 160)),  # 1/4 (1/8 would be 60 x 80, under the target)
    (1024, 1536, 96, (128, 192)),  # 1/8
    (2000, 3000, 224, (250, 375)),  # 1/8 of an Office-Home-sized photo, 12% above the target
    (600, 800, (48, 100), (150, 200)),  # a non-square target: the side with the least room decides (1/8: 100 wide)
])
def test_scaled_decode_stays_within_the_tolerance_of_the_full_decode(tmp_path, height, width, size, reduced):
    path = tmp_path / "photo.jpg"
    write_image(path, photo_like(height + width, height, width))
    hw = (size, size) if isinstance(size, int) else size
    assert tuple(_decode_reduced(_bytes(path), hw).shape) == (3, *reduced)  # the reduced path is really taken
    scaled, full = read_resized(path, size), _full(path, size)
    assert scaled.shape == full.shape == (3, *hw) and scaled.dtype == torch.uint8
    diff = (scaled.float() - full.float()).abs()
    assert 0 < diff.mean() <= MEAN_TOLERANCE and diff.max() <= MAX_TOLERANCE


def test_everything_else_is_decoded_exactly_as_before(tmp_path):
    image = photo_like(1, 200, 300)
    write_image(tmp_path / "big.png", image)  # PNG: no DCT to scale
    write_image(tmp_path / "near.jpg", image)  # a JPEG under twice the target
    write_image(tmp_path / "disguised.png", image)
    (tmp_path / "disguised.png").rename(tmp_path / "disguised.jpg")  # a PNG named .jpg
    for name, size in (("big.png", 32), ("near.jpg", 120), ("disguised.jpg", 32)):
        assert _decode_reduced(_bytes(tmp_path / name), (size, size)) is None
        assert _jpeg_size(_bytes(tmp_path / name)) == ((200, 300) if name == "near.jpg" else None)
        assert torch.equal(read_resized(tmp_path / name, size), _full(tmp_path / name, size))


def test_the_size_is_read_past_exif_and_from_progressive_jpegs(tmp_path):
    exif = Image.Exif()
    exif[0x010F] = "camera maker " * 100  # a large APP1 segment before the frame header
    picture = Image.fromarray(photo_like(5, 300, 500).permute(1, 2, 0).numpy())
    picture.save(tmp_path / "exif.jpg", quality=90, exif=exif)
    picture.save(tmp_path / "progressive.jpg", quality=90, progressive=True)
    for name in ("exif.jpg", "progressive.jpg"):
        assert _jpeg_size(_bytes(tmp_path / name)) == (300, 500)
        scaled, full = read_resized(tmp_path / name, 64), _full(tmp_path / name, 64)
        assert not torch.equal(scaled, full)  # the reduced decode ran
        assert (scaled.float() - full.float()).abs().mean() <= MEAN_TOLERANCE
    for cut in (b"", b"\xff\xd8", b"\xff\xd8\xff\xc0\x00\x11\x08\x01"):  # ends before the frame's size
        assert _jpeg_size(memoryview(cut)) is None
    with pytest.raises(DlcvkitError) as expected:
        read_image(tmp_path / "missing.jpg")
    with pytest.raises(DlcvkitError) as got:
        read_resized(tmp_path / "missing.jpg", 64)
    assert str(got.value) == str(expected.value) and "no such file" in str(got.value)


def test_a_grey_jpeg_becomes_three_equal_channels(tmp_path):
    grey = photo_like(2, 256, 256)[:1]
    write_image(tmp_path / "grey.jpg", grey)
    scaled = read_resized(tmp_path / "grey.jpg", 32)
    assert scaled.shape == (3, 32, 32) and torch.equal(scaled[0], scaled[1]) and torch.equal(scaled[1], scaled[2])
    assert (scaled.float() - _full(tmp_path / "grey.jpg", 32).float()).abs().max() <= MAX_TOLERANCE


def test_a_broken_jpeg_is_reported_like_before(tmp_path):
    write_image(tmp_path / "photo.jpg", photo_like(3, 256, 256))
    data = (tmp_path / "photo.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "garbage.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    for name in ("cut.jpg", "garbage.jpg"):
        with pytest.raises(DlcvkitError) as expected:
            read_image(tmp_path / name)
        with pytest.raises(DlcvkitError) as got:
            read_resized(tmp_path / name, 32)
        assert str(got.value) == str(expected.value) and name in str(got.value)


def test_the_datasets_read_through_the_scaled_decode(tmp_path):
    write_image(tmp_path / "a.jpg", photo_like(4, 512, 512))
    sample = UnlabeledFolder(tmp_path, size=64)[0]
    assert torch.equal(sample["image"], read_resized(tmp_path / "a.jpg", 64))
    assert not torch.equal(sample["image"], _full(tmp_path / "a.jpg", 64))
