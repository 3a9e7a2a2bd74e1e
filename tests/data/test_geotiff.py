"""Multispectral GeoTIFF input (issue 28: 4, 6): synthetic georeferenced tiles, raw values of every dtype, band
statistics against numpy, and one line naming the file for a wrong band count, a mask of another size, a
damaged raster."""

import hashlib
import shutil

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from dlcvkit.data.cache import cache_splits
from dlcvkit.data.geotiff import band_statistics
from dlcvkit.data.masks import write_mask
from dlcvkit.data.satellite import SatellitePairs
from dlcvkit.data.synth import SYNTH_CRS, synth_seg
from dlcvkit.errors import DlcvkitError
from dlcvkit.tasks.segment import SegmentRecipe, SegmentTask
from tests.cli_runner import dlcvkit_here


def write_raster(path, values: np.ndarray, crs="EPSG:32633", transform=None) -> None:
    """`values` `c h w` as a GeoTIFF (uncompressed, striped)."""
    transform = transform or from_origin(300_000, 5_000_000, 10, 10)
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[2], height=values.shape[1],
                       count=values.shape[0], dtype=values.dtype.name, crs=crs, transform=transform) as dst:
        dst.write(values)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """4 synthetic 4-band GeoTIFF tiles of 32x32 with their masks (read-only)."""
    folder = tmp_path_factory.mktemp("geotiff") / "tiles"
    synth_seg(folder, n=4, size=32, seed=0, bands=4)
    return folder


def test_synth_geotiff_tiles_are_georeferenced_uint16_and_seeded(tiles, tmp_path):
    with rasterio.open(tiles / "0002_sat.tif") as src:
        assert (src.count, src.dtypes[0], src.width, src.height) == (4, "uint16", 32, 32)
        assert src.crs.to_string() == SYNTH_CRS
        assert src.transform == from_origin(500_000 + 2 * 32 * 10, 5_000_000, 10, 10)  # tile 2, 10 m pixels
    assert sorted(p.name for p in tiles.iterdir())[:2] == ["0000_mask.png", "0000_sat.tif"]
    synth_seg(tmp_path / "again", n=4, size=32, seed=0, bands=4)
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tiles.iterdir()}
    assert digest == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "again").iterdir()}


def test_cli_synth_geotiff_and_its_refusals(tmp_path, capsys):
    code, _, err = dlcvkit_here(capsys, "data", "synth", "seg", "--out", tmp_path / "a", "--n", 2, "--img-size", 32,
                                "--geotiff", "--bands", 6)
    assert code in (0, None), err
    with rasterio.open(tmp_path / "a" / "0001_sat.tif") as src:
        assert src.count == 6
    code, _, err = dlcvkit_here(capsys, "data", "synth", "seg", "--out", tmp_path / "b", "--bands", 6)
    assert code == 2 and err == ("dlcvkit: error: --bands goes with --geotiff (JPEGs hold 3 bands); add --geotiff "
                                 "or drop --bands\n")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_rasters_of_every_dtype_read_as_their_raw_values(tmp_path, dtype):
    values = (np.arange(5 * 32 * 32).reshape(5, 32, 32) % 251).astype(dtype) * (3 if dtype != "uint8" else 1)
    if dtype == "float32":
        values = values + np.float32(0.25)
    write_raster(tmp_path / "0000_sat.tif", values)
    write_mask(tmp_path / "0000_mask.png", torch.zeros(32, 32, dtype=torch.uint8))
    sample = SatellitePairs(tmp_path, bands=5)[0]
    assert sample["image"].dtype == torch.float32
    assert torch.equal(sample["image"], torch.from_numpy(values.astype(np.float32)))


def test_band_statistics_are_numpys_over_all_training_pixels(tiles):
    recipe = SegmentRecipe()
    recipe.data.train = str(tiles)
    resolved = SegmentTask.resolve(recipe)
    every = np.concatenate([rasterio.open(p).read().reshape(4, -1) for p in sorted(tiles.glob("*_sat.tif"))], axis=1)
    assert resolved.data.bands == 4
    np.testing.assert_allclose(resolved.data.band_mean, every.astype(np.float64).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(resolved.data.band_std, every.astype(np.float64).std(axis=1), rtol=1e-9)
    assert recipe.data.bands == 0 and recipe.data.band_mean == []  # resolve returns a copy


def test_statistics_stream_over_blocks_of_a_tiled_raster(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65535, (3, 100, 70), dtype=np.uint16)
    with rasterio.open(tmp_path / "t.tif", "w", driver="GTiff", width=70, height=100, count=3, dtype="uint16",
                       tiled=True, blockxsize=32, blockysize=32) as dst:  # partial edge blocks
        dst.write(values)
    mean, std = band_statistics([tmp_path / "t.tif"], 3)
    np.testing.assert_allclose(mean, values.reshape(3, -1).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(std, values.reshape(3, -1).std(axis=1), rtol=1e-9)


def _raster(path, values, dtype):
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[2], height=values.shape[1],
                       count=values.shape[0], dtype=dtype) as dst:
        dst.write(values.astype(dtype))


def test_a_constant_band_gets_std_one_not_a_division_by_zero(tmp_path):
    values = np.random.default_rng(1).integers(0, 1000, (3, 20, 30)).astype(np.float32)
    values[1] = 7.0  # an empty no-data band
    _raster(tmp_path / "t.tif", values, "float32")
    mean, std = band_statistics([tmp_path / "t.tif"], 3)
    assert mean[1] == 7.0 and std[1] == 1.0
    np.testing.assert_allclose([std[0], std[2]], values[[0, 2]].reshape(2, -1).std(axis=1), rtol=1e-6)


def test_nan_pixels_are_named_before_they_reach_the_statistics(tmp_path):
    values = np.ones((2, 8, 8), dtype=np.float32)
    values[1, 3, 4] = np.nan
    _raster(tmp_path / "t.tif", values, "float32")
    with pytest.raises(DlcvkitError) as refused:
        band_statistics([tmp_path / "t.tif"], 2)
    assert str(refused.value) == (f"{tmp_path / 't.tif'} holds NaN or infinite pixels (band 2); fill its no-data "
                                  "pixels with a number before training")


def test_jpeg_data_resolves_to_three_bands_and_imagenet_statistics(seg_data):
    recipe = SegmentRecipe()
    recipe.data.train = str(seg_data)
    data = SegmentTask.resolve(recipe).data
    assert (data.bands, data.band_mean, data.band_std) == (3, [], [])


def _bad_folder(tiles, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(tiles, folder)
    return folder


def test_a_raster_of_another_band_count_is_named(tiles, tmp_path):
    folder = _bad_folder(tiles, tmp_path)
    write_raster(folder / "0001_sat.tif", np.zeros((3, 32, 32), dtype=np.uint16))
    with pytest.raises(DlcvkitError) as error:
        SatellitePairs(folder, bands=4).check()
    assert str(error.value) == (f"{folder / '0001_sat.tif'} has 3 bands, but data.bands is 4; every image of a "
                                "run needs its band count")


def test_a_mask_of_another_size_is_named(tiles, tmp_path):
    folder = _bad_folder(tiles, tmp_path)
    write_mask(folder / "0003_mask.png", torch.zeros(16, 32, dtype=torch.uint8))
    with pytest.raises(DlcvkitError) as error:
        SatellitePairs(folder, bands=4).check()
    assert str(error.value) == ("0003_sat.tif is 32x32 but 0003_mask.png is 32x16 (width x height) in "
                                f"{folder}; they must match")


def test_a_damaged_raster_stops_training_in_one_line(tiles, tmp_path, capsys):
    folder = _bad_folder(tiles, tmp_path)
    data = (folder / "0002_sat.tif").read_bytes()
    (folder / "0002_sat.tif").write_bytes(data[:600])  # the header survives, the pixels are cut
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code, _, err = dlcvkit_here(capsys, "segment", "--recipe", "demo_seg", "--data", folder, "--out",
                                tmp_path / "run", "--set", "data.img_size=32")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"dlcvkit: error: cannot read GeoTIFF {folder / '0002_sat.tif'}: "), err
    assert err.endswith("; remove or replace it\n"), err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before and not (tmp_path / "run").exists()


def test_a_folder_mixing_jpegs_and_rasters_is_refused(tiles, seg_data, tmp_path):
    folder = _bad_folder(tiles, tmp_path)
    shutil.copy(seg_data / "0000_sat.jpg", folder / "0009_sat.jpg")
    shutil.copy(seg_data / "0000_mask.png", folder / "0009_mask.png")
    with pytest.raises(DlcvkitError, match=r"holds both xxxx_sat.jpg and xxxx_sat.tif images; keep one kind"):
        SatellitePairs(folder)


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_the_decoded_image_cache_holds_multispectral_samples(tiles, tmp_path, mode):
    dataset = SatellitePairs(tiles, size=32, bands=4)
    (cached,), notes = cache_splits({"data.train": dataset}, mode, tmp_path)
    assert not any(note.startswith("warning") for note in notes), notes
    for i in range(len(dataset)):
        assert cached[i]["image"].dtype == torch.float32 and cached[i]["image"].shape == (4, 32, 32)
        assert torch.equal(cached[i]["image"], dataset[i]["image"]) and torch.equal(cached[i]["mask"],
                                                                                    dataset[i]["mask"])
