"""`dlcvkit predict seg` on GeoTIFFs: one `xxxx_mask.tif` per `xxxx_sat.tif`, one band of class ids coloured by
the course's palette, with the input's size, CRS and transform.

With `--tile` the raster is read and the mask written one row of windows at a time (`slide.window_starts`'s
grid, probabilities summed in the same order as `slide_masks`, so the masks are the same): memory holds one
`C x tile x width` sum and a window batch, never the raster, and GDAL's block cache is capped (CACHE_MB).
"""

from __future__ import annotations

import sys
from pathlib import Path

import rasterio
import torch
from rasterio.windows import Window

from dlcvkit.data.geotiff import UnreadableRaster, open_raster, read_window
from dlcvkit.data.masks import NUM_CLASSES, PALETTE
from dlcvkit.data.folders import visible
from dlcvkit.data.satellite import GEOTIFF_SAT_SUFFIX, SatellitePairs
from dlcvkit.data.unreadable import incomplete_output
from dlcvkit.engine.distributed import make_accelerator
from dlcvkit.errors import DlcvkitError
from dlcvkit.runs.load import check_run_kind, eval_data, load_run, run_recipe
from dlcvkit.runs.slide import window_starts
from dlcvkit.tasks.segment import Stats, band_stats, predict_masks, predict_probs

MASK_TIF_SUFFIX = "_mask.tif"
CACHE_MB = 64  # GDAL's block cache (default 5% of RAM) would otherwise grow with the raster read through it
COLOUR_MAP = {i: (*map(int, rgb), 255) for i, rgb in enumerate(PALETTE.tolist())}


def geotiff_folder(folder: Path) -> bool:
    """Whether the P2 folder holds `xxxx_sat.tif` rasters (then `predict_rasters` serves it); a folder that is
    none is left to the reader to report."""
    return Path(folder).is_dir() and any(name.endswith(GEOTIFF_SAT_SUFFIX) for name in visible(Path(folder)))


def predict_rasters(run_dir: Path, images_dir: Path, out_dir: Path, *, weights: str, batch_size: int,
                    tta: bool, skip_bad: bool, tile: int, overlap: int) -> int:
    """Write `NAME_mask.tif` for every `NAME_sat.tif` with a run's model (see the module); returns how many this
    process wrote (processes share the rasters). OUT_DIR was checked by the caller. With `skip_bad`, rasters
    that cannot be read are left out and named in the error raised at the end."""
    if Path(run_dir).is_file():
        raise DlcvkitError(f"--onnx {run_dir}: GeoTIFF input needs the run's folder (--run RUN_DIR)")
    check_run_kind(run_dir, ("segment",))
    accelerator = make_accelerator(run_recipe(run_dir).train)
    recipe, _, model = load_run(run_dir, weights, accelerator.device)
    stats, bands = band_stats(recipe.data), recipe.data.bands or 3
    dataset = SatellitePairs(images_dir, with_masks=False, bands=bands)
    windows = eval_data(recipe.data, batch_size).eval_batch_size  # windows per forward pass
    mine = range(accelerator.process_index, len(dataset), accelerator.num_processes)
    accelerator.wait_for_everyone()  # every process checked OUT_DIR before any writes into it
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped = []
    with rasterio.Env(GDAL_CACHEMAX=CACHE_MB), accelerator.autocast():
        for i in mine:
            source, target = dataset.files(i)[0], out_dir / f"{dataset.names[i]}{MASK_TIF_SUFFIX}"
            try:
                note = predict_raster(model, source, target, recipe.data.img_size, stats, bands, tta=tta,
                                      tile=tile, overlap=overlap, windows=windows, run=run_dir)
            except Exception as e:
                target.unlink(missing_ok=True)  # a mask half written is no mask
                if not (skip_bad and isinstance(e, UnreadableRaster)):
                    raise
                skipped.append(source)
                continue
            if note:
                print(f"dlcvkit: note: {note}", file=sys.stderr)
    accelerator.wait_for_everyone()
    if skipped:
        raise incomplete_output(skipped, len(mine), f"masks are in {out_dir}")
    return len(mine) - len(skipped)


def predict_raster(model, source: Path, target: Path, input_size: int, stats: Stats, bands: int, *, tta: bool,
                   tile: int, overlap: int, windows: int, run: Path | str = "the run") -> str:
    """Write the mask raster `target` of the raster `source`; returns a note for the user ("" if none)."""
    device = next(model.parameters()).device
    with open_raster(source, bands, f"data.bands of --run {run}") as src:
        if not stats[0] and src.dtypes[0] != "uint8":
            raise DlcvkitError(f"{source} holds {src.dtypes[0]} values, but --run {run} was trained on RGB "
                               "JPEG/PNG (0..255 pixels): give it uint8 rasters, or train on GeoTIFFs")
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": 1, "dtype": "uint8",
                   "crs": src.crs, "transform": src.transform, "compress": "deflate"}
        with rasterio.open(target, "w", **profile) as dst:
            dst.write_colormap(1, COLOUR_MAP)
            if tile == 0 or (src.height <= tile and src.width <= tile):
                image = read_window(src).to(device)
                dst.write(predict_masks(model, image[None], input_size, tta, stats)[0].to(torch.uint8).cpu().numpy(),
                          1)
            else:
                _slide(src, dst, model, input_size, stats, tta, tile, tile - overlap, windows, device)
        if src.crs is None:
            return f"{source} has no CRS: {target.name} is written without one (the same size and transform)"
    return ""


def _slide(src, dst, model, input_size: int, stats: Stats, tta: bool, tile: int, stride: int, windows: int,
           device) -> None:
    """The sliding-window mask of `src` written into `dst`, one row of windows at a time: after row y the
    rows above the next row's start are final (no later window covers them) and are written."""
    height, width = src.height, src.width
    th, tw = min(tile, height), min(tile, width)
    rows, cols = window_starts(height, tile, stride), window_starts(width, tile, stride)
    total = torch.zeros((NUM_CLASSES, th, width), device=device)  # probability sums of rows origin..origin+th
    count = torch.zeros((th, width), device=device)
    origin = 0
    for k, y in enumerate(rows):
        for first in range(0, len(cols), windows):
            chunk = cols[first:first + windows]
            images = torch.stack([read_window(src, Window(x, y, tw, th)) for x in chunk]).to(device)
            for x, probs in zip(chunk, predict_probs(model, images, input_size, tta, stats)):
                total[:, y - origin:y - origin + th, x:x + tw] += probs
                count[y - origin:y - origin + th, x:x + tw] += 1
        end = rows[k + 1] if k + 1 < len(rows) else height
        done = end - origin
        mask = (total[:, :done] / count[:done]).argmax(dim=0).to(torch.uint8).cpu().numpy()
        dst.write(mask, 1, window=Window(0, origin, width, done))
        # the rows the next windows also cover move to the top of the sums
        kept = th - done
        total[:, :kept] = total[:, done:].clone()
        count[:kept] = count[done:].clone()
        total[:, kept:] = 0
        count[kept:] = 0
        origin = end
