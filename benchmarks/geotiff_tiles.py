"""Tiled prediction of large multispectral GeoTIFFs (issue 28: 7): peak RSS and time of `dlcvkit predict seg
--tile 512` on uint16 4-band rasters of 10,000 x 10,000 and smaller, each written block by block.

A tiny FCN8s/resnet18 run (1 step on 64 px synthetic tiles) does the predicting: what is measured is the reading,
window batching, blending and writing around the model, and the memory they take. Each prediction runs in its
own process; its peak RSS is that process's `ru_maxrss`.

    python benchmarks/geotiff_tiles.py /tmp/geotiff-bench   # needs ~1 GB of disk for the largest raster
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin

from dlcvkit.data.synth import SYNTH_CRS, synth_seg

BLOCK = 512
# (width, height, --tile): one window (the process's own size), whole rasters without --tile for contrast, then
# tiled ones growing in height and in width
CASES = ((512, 512, 0), (2_500, 2_500, 0), (5_000, 5_000, 0), (2_500, 2_500, 512), (2_500, 10_000, 512),
         (10_000, 2_500, 512), (10_000, 10_000, 512))


def write_scene(path: Path, width: int, height: int, tiles: list[np.ndarray]) -> None:
    """A tiled uint16 4-band GeoTIFF, each 512 block one of the synthetic `tiles` (never the whole raster)."""
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=4, dtype="uint16",
                       crs=SYNTH_CRS, transform=from_origin(500_000, 5_000_000, 10, 10), tiled=True,
                       blockxsize=BLOCK, blockysize=BLOCK) as dst:
        for k, (_, window) in enumerate(dst.block_windows(1)):
            dst.write(tiles[k % len(tiles)][:, :window.height, :window.width], window=window)


def child(args: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of `python -m dlcvkit ARGS` in a process of its own."""
    script = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
              "subprocess.run([sys.executable, '-m', 'dlcvkit', *sys.argv[1:]], check=True); "
              "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", script, *args], check=True, capture_output=True, text=True)
    seconds, peak = out.stdout.split()
    return float(seconds), float(peak)


def main(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    synth_seg(root / "tiles", n=8, size=BLOCK, seed=0, bands=4, overwrite=True)
    tiles = [rasterio.open(p).read() for p in sorted((root / "tiles").glob("*_sat.tif"))]
    subprocess.run([sys.executable, "-m", "dlcvkit", "segment", "-r", "demo_seg", "--data", root / "tiles", "--out",
                    root / "run", "--max-steps", "1", "--overwrite", "--set", "model.fcn_width=16"], check=True,
                   capture_output=True)
    results = []
    for width, height, tile in CASES:
        scene, out = root / "scene", root / "pred"
        scene.mkdir(exist_ok=True)
        write_scene(scene / "big_sat.tif", width, height, tiles)
        tiling = ["--tile", str(tile), "--overlap", str(tile // 4)] if tile else []
        seconds, peak = child(["predict", "seg", "--run", str(root / "run"), "--data", str(scene), "--out", str(out),
                               "--overwrite", "--batch-size", "8", *tiling])
        with rasterio.open(out / "big_mask.tif") as mask:
            assert (mask.width, mask.height) == (width, height)
        row = {"width": width, "height": height, "bands": 4, "tile": tile,
               "raster_mib": round(width * height * 4 * 2 / 2**20), "seconds": round(seconds, 1),
               "peak_rss_mib": round(peak)}
        results.append(row)
        print(json.dumps(row), flush=True)
        (scene / "big_sat.tif").unlink()  # the next raster needs the room
    (root / "results.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/geotiff-bench"))
