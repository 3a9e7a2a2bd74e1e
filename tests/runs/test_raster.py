"""GeoTIFF in and out (issue 28: 4, 5): a run trained on 4-band rasters, `predict seg` writing georeferenced
`xxxx_mask.tif` (the input's size, CRS and transform, the course colours), `--tile` window by window equal to
the sliding windows in memory, and one line for what does not fit the run."""

import shutil

import numpy as np
import pytest
import rasterio
import torch

from dlcvkit.cli import main
from dlcvkit.data.geotiff import read_raster
from dlcvkit.data.masks import PALETTE
from dlcvkit.data.satellite import SatellitePairs
from dlcvkit.data.synth import synth_seg
from dlcvkit.engine.metrics import Confusion
from dlcvkit.runs import raster
from dlcvkit.runs.segment import evaluate_run, load_segment_run
from dlcvkit.runs.slide import slide_masks
from dlcvkit.tasks.segment import band_stats, predict_masks
from tests.cli_runner import dlcvkit_here
from tests.data.test_geotiff import write_raster

TINY = ["--set", "data.img_size=32", "--set", "data.batch_size=4", "--set", "model.fcn_width=16"]  # on demo_seg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run of one step on 4 synthetic 4-band tiles, and `big/scene_sat.tif`: an 80x72 (w x h) 4-band raster
    (3 x 3 windows of 32 px with an overlap of 8: rows at 0, 24, 40; columns at 0, 24, 48)."""
    root = tmp_path_factory.mktemp("raster")
    synth_seg(root / "train", n=4, size=32, seed=0, bands=4)
    with pytest.raises(SystemExit) as exited:  # in this process: a second Python would cost more than the step
        main(["segment", "-r", "demo_seg", "--data", str(root / "train"), "--out", str(root / "run"),
              "--max-steps", "1", *TINY])
    assert exited.value.code in (0, None)
    synth_seg(root / "scene", n=1, size=80, seed=5, bands=4)
    with rasterio.open(root / "scene" / "0000_sat.tif") as src:
        values, crs, transform = src.read()[:, :72], src.crs, src.transform
    (root / "big").mkdir()
    write_raster(root / "big" / "scene_sat.tif", values, crs=crs, transform=transform)
    return root


def _predict(capsys, run, data, out, *extra):
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", run / "run", "--data", data, "--out", out, *extra)
    assert code in (0, None), err
    return err


def _expected(run, path, **slide):
    """The PyTorch prediction of the raster `path` in memory: whole, or `slide_masks` with `slide`."""
    recipe, model = load_segment_run(run / "run")
    image = read_raster(path)[None]
    stats = band_stats(recipe.data)
    if slide:
        return slide_masks(model, image, 32, False, slide["tile"], slide["overlap"], stats)[0]
    return predict_masks(model, image, 32, stats=stats)[0]


def test_run_records_bands_and_statistics(run):
    recipe, model = load_segment_run(run / "run")
    assert recipe.data.bands == 4 and len(recipe.data.band_mean) == len(recipe.data.band_std) == 4
    assert model.encoder.conv1.weight.shape[1] == 4  # the first convolution takes the 4 bands


def test_mask_tif_keeps_the_inputs_size_crs_transform_and_has_the_course_colours(run, capsys, tmp_path):
    err = _predict(capsys, run, run / "big", tmp_path / "out")
    assert err == f"wrote 1 masks to {tmp_path / 'out'}\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scene_mask.tif"]
    with rasterio.open(run / "big" / "scene_sat.tif") as src, rasterio.open(tmp_path / "out" / "scene_mask.tif") as m:
        assert (m.count, m.dtypes[0], m.width, m.height) == (1, "uint8", 80, 72)
        assert m.crs == src.crs and m.transform == src.transform
        colours = m.colormap(1)
        assert [colours[i][:3] for i in range(7)] == [tuple(rgb) for rgb in PALETTE.tolist()]
        assert torch.equal(torch.from_numpy(m.read(1)).long(), _expected(run, run / "big" / "scene_sat.tif"))


def test_tiled_prediction_reads_window_by_window_and_equals_the_sliding_windows(run, capsys, tmp_path,
                                                                                 monkeypatch):
    read, windows = raster.read_window, []

    def recorded(src, window=None):
        windows.append(window)
        return read(src, window)

    monkeypatch.setattr(raster, "read_window", recorded)
    _predict(capsys, run, run / "big", tmp_path / "out", "--tile", 32, "--overlap", 8, "--batch-size", 1)
    assert len(windows) == 3 * 3 and all(w is not None and w.height <= 32 and w.width <= 32 for w in windows)
    with rasterio.open(tmp_path / "out" / "scene_mask.tif") as m:
        mask = torch.from_numpy(m.read(1)).long()
    assert torch.equal(mask, _expected(run, run / "big" / "scene_sat.tif", tile=32, overlap=8))


@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_other_dtypes_of_the_same_values_give_the_same_mask(run, capsys, tmp_path, dtype):
    (tmp_path / "in").mkdir()
    with rasterio.open(run / "big" / "scene_sat.tif") as src:
        write_raster(tmp_path / "in" / "scene_sat.tif", src.read().astype(dtype), crs=src.crs, transform=src.transform)
    _predict(capsys, run, tmp_path / "in", tmp_path / "out")
    with rasterio.open(tmp_path / "out" / "scene_mask.tif") as m:
        assert torch.equal(torch.from_numpy(m.read(1)).long(), _expected(run, run / "big" / "scene_sat.tif"))


def test_a_raster_without_crs_gets_a_mask_without_crs_and_one_line_saying_so(run, capsys, tmp_path):
    (tmp_path / "in").mkdir()
    with rasterio.open(run / "big" / "scene_sat.tif") as src:
        write_raster(tmp_path / "in" / "scene_sat.tif", src.read(), crs=None, transform=src.transform)
    err = _predict(capsys, run, tmp_path / "in", tmp_path / "out")
    assert err.splitlines()[0] == (f"dlcvkit: note: {tmp_path / 'in' / 'scene_sat.tif'} has no CRS: scene_mask.tif "
                                   "is written without one (the same size and transform)")
    with rasterio.open(tmp_path / "out" / "scene_mask.tif") as m:
        assert m.crs is None and m.transform == rasterio.open(tmp_path / "in" / "scene_sat.tif").transform


def test_a_raster_of_another_band_count_is_refused_in_one_line(run, capsys, tmp_path):
    (tmp_path / "in").mkdir()
    write_raster(tmp_path / "in" / "a_sat.tif", np.zeros((3, 32, 32), dtype=np.uint16))
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", run / "run", "--data", tmp_path / "in", "--out",
                                tmp_path / "out")
    assert code == 2 and err == (f"dlcvkit: error: {tmp_path / 'in' / 'a_sat.tif'} has 3 bands, but data.bands of "
                                 f"--run {run / 'run'} is 4; every image of a run needs its band count\n")


def test_rgb_jpegs_given_to_a_multispectral_run_are_refused_in_one_line(run, capsys, tmp_path, seg_data):
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", run / "run", "--data", seg_data, "--out",
                                tmp_path / "out")
    assert code == 2 and err == (f"dlcvkit: error: {seg_data} holds RGB xxxx_sat.jpg images (3 bands), but "
                                 f"data.bands of --run {run / 'run'} is 4; give xxxx_sat.tif rasters of 4 bands\n")


def test_eval_on_rasters_uses_the_runs_band_statistics(run):
    matrix, _, _ = evaluate_run(run / "run", run / "train", weights="best", batch_size=4)
    recipe, model = load_segment_run(run / "run")
    confusion = Confusion(7, "cpu")
    for sample in SatellitePairs(run / "train", bands=4):
        confusion.update(predict_masks(model, sample["image"][None], 32, stats=band_stats(recipe.data)),
                         sample["mask"][None])
    assert torch.equal(matrix, confusion.matrix)


def test_export_refuses_a_multispectral_run_in_one_line(run, capsys, tmp_path):
    code, _, err = dlcvkit_here(capsys, "export", "--run", run / "run", "--out", tmp_path / "m.onnx")
    assert code == 2 and err == (f"dlcvkit: error: --run {run / 'run'} was trained on 4-band rasters with their own "
                                 "band statistics; `export` writes RGB models only: predict with --run RUN_DIR\n")
    assert not list(tmp_path.iterdir())


def test_skip_bad_leaves_out_a_damaged_raster_and_keeps_no_half_mask(run, capsys, tmp_path):
    (tmp_path / "in").mkdir()
    shutil.copy(run / "big" / "scene_sat.tif", tmp_path / "in" / "a_sat.tif")
    damaged = tmp_path / "in" / "b_sat.tif"
    damaged.write_bytes((run / "big" / "scene_sat.tif").read_bytes()[:20000])  # header whole, pixels cut
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", run / "run", "--data", tmp_path / "in", "--out",
                                tmp_path / "out", "--tile", 32, "--skip-bad")
    assert code == 2 and err == (f"dlcvkit: error: skipped 1 of 2 images that cannot be decoded: {damaged}; the "
                                 f"other 1 masks are in {tmp_path / 'out'}\n")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_mask.tif"]


def test_a_run_of_another_task_is_named(run, capsys, tmp_path):
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "recipe.toml").write_text('task = "classify"\n')  # what names a run's task
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--run", tmp_path / "cls", "--data", run / "big", "--out",
                                tmp_path / "out")
    assert code == 2 and err.startswith(f"dlcvkit: error: --run {tmp_path / 'cls'} is a classify run"), err
