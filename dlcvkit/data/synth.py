"""Small, seeded, learnable synthetic data sets in each course layout (for tests, demos and smoke runs).

Objects (cls, ssl, officehome): the class is a (shape, fill pattern) pair, so up to 70 classes exist; position,
scale (45-90% of the image), rotation (±25°, small enough that a square stays unlike a diamond), colours and a
background gradient with noise vary per image and carry no class information. Patterns are drawn in image
coordinates (not rotated with the shape) so that horizontal and vertical stripes stay different classes.

Segmentation (seg): land-cover maps of noise-warped Voronoi regions plus small blobs and a thin band (river or
road) of 1/16-1/8 of the image, each class with its own texture and typical colour; every image holds class
`index % 7`, so a set of 7 or more images holds all 7 classes.

`palette="fixed"` (objects) draws every image in the same three grey levels instead of random colours: two views
of one image share its palette whatever the colour jitter, so self-supervised learning matches palettes before
objects (BYOL in the quick demo: linear probe at chance after 124 steps with random palettes, 0.40 with fixed ones).

Each image has its own generator seeded by (seed, kind, index): the same seed gives byte-identical files.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import torch
from einops import reduce
from PIL import Image, ImageDraw

from dlcvkit.data.images import write_image
from dlcvkit.data.masks import NUM_CLASSES, write_mask
from dlcvkit.errors import DlcvkitError
from dlcvkit.outputs import prepare_output_dir

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "star", "hexagon", "ring", "half_disk", "arrow")
PATTERNS = ("solid", "hstripes", "vstripes", "diagonal", "checker", "dots", "outline")
MAX_OBJECT_CLASSES = len(SHAPES) * len(PATTERNS)
SUPERSAMPLE = 4  # objects are drawn at 4x and box-filtered down: smooth edges without a per-pixel loop
_KIND_SEED = {"cls": 1, "ssl": 2, "officehome": 3, "seg": 4}
PALETTES = ("random", "fixed")
_FIXED_PALETTE = np.array([(30.0, 30.0, 30.0), (230.0, 230.0, 230.0), (130.0, 130.0, 130.0)])  # background, fills


def object_class(label: int) -> tuple[str, str]:
    """The (shape, pattern) of object class `label` < 70.

    pattern = (label // 10 + label) % 7 is (4 q + shape) mod 7 for q = label // 10, one-to-one for q < 7 since 4
    is invertible mod 7; the first 10 classes thus have 10 shapes and 7 different patterns.
    """
    shape = label % len(SHAPES)
    pattern = (label // len(SHAPES) + label) % len(PATTERNS)
    return SHAPES[shape], PATTERNS[pattern]


# ---------------------------------------------------------------------------------------------------- objects


def _star(points: int, inner: float) -> list[tuple[float, float]]:
    angles = -math.pi / 2 + np.arange(2 * points) * math.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return list(zip(radii * np.cos(angles), radii * np.sin(angles)))


def _regular(sides: int) -> list[tuple[float, float]]:
    angles = -math.pi / 2 + np.arange(sides) * 2 * math.pi / sides
    return list(zip(np.cos(angles), np.sin(angles)))


_HALF_DISK = [(math.cos(t), math.sin(t) + 0.35) for t in np.linspace(math.pi, 2 * math.pi, 25)]
# unit outlines inside the unit circle, y pointing down as in images
_POLYGONS = {
    "square": [(-0.72, -0.72), (0.72, -0.72), (0.72, 0.72), (-0.72, 0.72)],
    "triangle": _regular(3),
    "diamond": [(0.0, -1.0), (0.55, 0.0), (0.0, 1.0), (-0.55, 0.0)],
    "cross": [
        (-0.3, -0.95), (0.3, -0.95), (0.3, -0.3), (0.95, -0.3), (0.95, 0.3), (0.3, 0.3),
        (0.3, 0.95), (-0.3, 0.95), (-0.3, 0.3), (-0.95, 0.3), (-0.95, -0.3), (-0.3, -0.3),
    ],  # fmt: skip
    "star": _star(5, 0.42),
    "hexagon": _regular(6),
    "half_disk": _HALF_DISK,
    "arrow": [(0.0, -1.0), (0.72, -0.15), (0.28, -0.15), (0.28, 0.95), (-0.28, 0.95), (-0.28, -0.15), (-0.72, -0.15)],
}
_RING_INNER = 0.55


def _shape_mask(shape: str, canvas: int, cx: float, cy: float, radius: float, angle: float, outline: int) -> np.ndarray:
    """Boolean mask `h w` of the shape (filled, or only its border `outline` pixels wide if outline > 0)."""
    img = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(img)
    fill, line = (None, 255) if outline else (255, None)
    if shape in ("circle", "ring"):
        radii = (radius, radius * _RING_INNER) if shape == "ring" else (radius,)
        for k, r in enumerate(radii):
            box = (cx - r, cy - r, cx + r, cy + r)
            if outline:
                draw.ellipse(box, outline=255, width=outline)
            else:
                draw.ellipse(box, fill=255 if k == 0 else 0)  # the inner disk of a ring cuts the hole
    else:
        c, s = math.cos(angle), math.sin(angle)
        points = [(cx + radius * (c * x - s * y), cy + radius * (s * x + c * y)) for x, y in _POLYGONS[shape]]
        draw.polygon(points, fill=fill, outline=line, width=outline or 1)
    return np.asarray(img) > 127


def _pattern(pattern: str, coords: np.ndarray, period: float, phase: np.ndarray) -> np.ndarray:
    """Boolean `h w`: where the fill pattern takes the first colour (image coordinates, in output pixels)."""
    y = coords[:, None] + phase[0]
    x = coords[None, :] + phase[1]
    if pattern in ("solid", "outline"):
        return np.ones((len(coords), len(coords)), dtype=bool)
    if pattern == "hstripes":
        return np.broadcast_to((y % period) < period / 2, (len(coords), len(coords)))
    if pattern == "vstripes":
        return np.broadcast_to((x % period) < period / 2, (len(coords), len(coords)))
    if pattern == "diagonal":
        return ((x + y) / math.sqrt(2) % period) < period / 2
    if pattern == "checker":
        return ((x // (period / 2)) + (y // (period / 2))) % 2 == 0
    if pattern == "dots":
        dy = (y % period) - period / 2
        dx = (x % period) - period / 2
        return dx**2 + dy**2 < (0.32 * period) ** 2
    raise ValueError(pattern)


def _distinct_colours(rng: np.random.Generator, count: int, min_distance: float = 110.0) -> np.ndarray:
    """`count` random RGB colours, pairwise at least `min_distance` apart, so each part of the object stays visible."""
    while True:
        colours = rng.uniform(0, 255, (count, 3))
        gaps = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
        if gaps[np.triu_indices(count, 1)].min() >= min_distance:
            return colours


def render_object(rng: np.random.Generator, label: int, size: int, palette: str = "random") -> torch.Tensor:
    """One object image of class `label`: uint8 `3 size size`; `palette`: "random" colours or "fixed" grey levels."""
    shape, pattern = object_class(label)
    ss = SUPERSAMPLE
    canvas = size * ss
    scale = rng.uniform(0.45, 0.9)  # object diameter / image side
    radius = scale * size / 2
    cx, cy = rng.uniform(radius, size - radius, 2)
    angle = math.radians(rng.uniform(-25, 25))
    period = max(4.0, size / 6)  # >= 4 px at 32 px, so stripes survive down-sampling and JPEG
    phase = rng.uniform(0, period, 2)
    background, first, second = _distinct_colours(rng, 3) if palette == "random" else _FIXED_PALETTE

    outline = max(2, round(size / 16)) * ss if pattern == "outline" else 0
    inside = _shape_mask(shape, canvas, cx * ss, cy * ss, radius * ss, angle, outline)
    coords = (np.arange(canvas) + 0.5) / ss
    on = _pattern(pattern, coords, period, phase)
    part = np.where(inside, np.where(on, 1, 2), 0)  # 0 background, 1 pattern colour, 2 second fill colour
    colours = np.stack([background, first, second])[part]
    img = reduce(colours, "(h sh) (w sw) c -> h w c", "mean", sh=ss, sw=ss)  # each ss x ss block to one pixel

    # background gradient in a random direction and mild pixel noise: nuisance, not signal
    direction = rng.uniform(0, 2 * math.pi)
    y, x = np.mgrid[0:size, 0:size] / size
    ramp = np.cos(direction) * x + np.sin(direction) * y
    img += (ramp * rng.uniform(-30, 30))[..., None]
    img += rng.normal(0, 6, img.shape)
    return torch.from_numpy(np.clip(img + 0.5, 0, 255).astype(np.uint8).transpose(2, 0, 1).copy())


# ---------------------------------------------------------------------------------------------------- land cover

# typical colour of each class (ids as in masks.py): urban grey-blue, agriculture yellow-green, rangeland
# brown-purple, forest dark green, water blue, barren pale, unknown near black
_LAND_COLOURS = np.array(
    [(125, 135, 155), (180, 190, 85), (150, 110, 130), (35, 85, 40), (35, 70, 160), (210, 200, 178), (12, 12, 14)],
    dtype=np.float32,
)
_LAND_FREQUENCY = np.array([0.18, 0.22, 0.2, 0.16, 0.1, 0.1, 0.04])


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise `h w` of about unit scale with `cells` bumps across the image (bicubic up-sampled normals)."""
    grid = torch.from_numpy(rng.standard_normal((1, 1, cells + 1, cells + 1)).astype(np.float32))
    up = torch.nn.functional.interpolate(grid, size=(size, size), mode="bicubic", align_corners=True)
    return up[0, 0].numpy()


def _land_textures(rng: np.random.Generator, size: int) -> np.ndarray:
    """Texture of every class over the whole image: `k h w c` float (k = 7)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    base = _LAND_COLOURS + rng.uniform(-12, 12, _LAND_COLOURS.shape).astype(np.float32)
    shade = np.empty((NUM_CLASSES, size, size), dtype=np.float32)
    block = max(4.0, size / 32)
    grid = ((x % block) < block / 4) | ((y % block) < block / 4)
    shade[0] = -40 * grid + 12 * _smooth_noise(rng, size, max(2, size // 48))  # streets between blocks
    theta = rng.uniform(0, math.pi)
    furrow = max(4.0, size / 40)
    shade[1] = 30 * np.sin(2 * math.pi * (x * math.cos(theta) + y * math.sin(theta)) / furrow)  # field rows
    shade[2] = rng.normal(0, 22, (size, size))  # speckle
    shade[3] = 28 * _smooth_noise(rng, size, max(2, size // 12)) + rng.normal(0, 6, (size, size))  # tree crowns
    shade[4] = 8 * _smooth_noise(rng, size, 2)  # smooth water
    shade[5] = 16 * _smooth_noise(rng, size, max(2, size // 8)) + rng.normal(0, 8, (size, size))
    shade[6] = rng.normal(0, 3, (size, size))
    return base[:, None, None, :] + shade[..., None]


def render_land_cover(rng: np.random.Generator, size: int, must_have: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One satellite-like image uint8 `3 h w` and its class ids uint8 `h w`, holding class `must_have`."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    # coarse and fine warps make the region boundaries irregular
    warp_y = size * (0.08 * _smooth_noise(rng, size, 4) + 0.015 * _smooth_noise(rng, size, 16))
    warp_x = size * (0.08 * _smooth_noise(rng, size, 4) + 0.015 * _smooth_noise(rng, size, 16))
    wy, wx = y + warp_y, x + warp_x

    regions = int(rng.integers(4, 9))
    centres = rng.uniform(0, size, (regions, 2)).astype(np.float32)
    region_class = rng.choice(NUM_CLASSES, size=regions, p=_LAND_FREQUENCY)
    distance = (wy[None] - centres[:, 0, None, None]) ** 2 + (wx[None] - centres[:, 1, None, None]) ** 2
    ids = region_class[distance.argmin(axis=0)]

    # a thin band (river: water, or road: urban), 1/16-1/8 of the image wide, meandering
    theta = rng.uniform(0, math.pi)
    across = (wx - size / 2) * -math.sin(theta) + (wy - size / 2) * math.cos(theta)
    along = (wx - size / 2) * math.cos(theta) + (wy - size / 2) * math.sin(theta)
    offset = rng.uniform(-0.3, 0.3) * size + 0.08 * size * np.sin(2 * math.pi * along / (size * rng.uniform(0.6, 1.2)))
    width = rng.uniform(1 / 16, 1 / 8) * size
    ids[np.abs(across - offset) < width / 2] = rng.choice([4, 0])

    # small regions (1/16-1/8 of the image across), then the class this image must hold, on top
    blobs = [(int(rng.choice(NUM_CLASSES, p=_LAND_FREQUENCY)), rng.uniform(1 / 16, 1 / 8)) for _ in range(3)]
    blobs.append((must_have, rng.uniform(1 / 8, 1 / 5)))
    for cls, diameter in blobs:
        r = diameter * size / 2
        cy, cx = rng.uniform(r, size - r, 2)
        ids[(wy - warp_y * 0.5 - cy) ** 2 + (wx - warp_x * 0.5 - cx) ** 2 < r**2] = cls
    ids = ids.astype(np.uint8)

    textures = _land_textures(rng, size)
    img = textures[ids, y.astype(np.intp), x.astype(np.intp)]  # h w c
    img = img * rng.uniform(0.85, 1.15) + rng.uniform(-10, 10, 3)  # per-image brightness, colour cast
    img += rng.normal(0, 5, img.shape)
    image = torch.from_numpy(np.clip(img + 0.5, 0, 255).astype(np.uint8).transpose(2, 0, 1).copy())
    return image, torch.from_numpy(ids)


# ---------------------------------------------------------------------------------------------------- writers


def _rng(seed: int, kind: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _KIND_SEED[kind], index])


def _check(n: int, size: int, classes: int | None, *, min_size: int = 16, max_classes: int | None = None,
           palette: str = "random") -> None:
    if palette not in PALETTES:
        raise DlcvkitError(f"--palette must be one of {', '.join(PALETTES)}, got {palette!r}")
    if n < 1:
        raise DlcvkitError(f"--n must be at least 1, got {n}")
    if size < min_size:
        raise DlcvkitError(f"--img-size must be at least {min_size} pixels, got {size}")
    if classes is not None and not 1 <= classes <= (max_classes or MAX_OBJECT_CLASSES):
        raise DlcvkitError(f"--classes must be 1..{max_classes or MAX_OBJECT_CLASSES}, got {classes}")


def synth_cls(
    out: str | os.PathLike, n: int = 500, size: int = 32, classes: int = 10, seed: int = 0, *,
    overwrite: bool = False, palette: str = "random",
) -> str:
    """P1 layout: a flat folder of `{label}_{index}.png` (labels round-robin, index counts within the class).

    Returns a one-line summary of what was written.
    """
    _check(n, size, classes, palette=palette)
    out = prepare_output_dir(Path(out), "--out", overwrite)
    for i in range(n):
        label, index = i % classes, i // classes
        write_image(out / f"{label}_{index}.png", render_object(_rng(seed, "cls", i), label, size, palette))
    layout = "{label}_{index}.png, P1 layout"
    return f"wrote {n} {size}x{size} PNG images of {min(n, classes)} classes ({layout}) to {out}"


def synth_ssl(
    out: str | os.PathLike, n: int = 1000, size: int = 64, classes: int = 10, seed: int = 0, *,
    overwrite: bool = False, palette: str = "random",
) -> str:
    """Mini-ImageNet layout: a flat folder of unlabeled `00000.jpg` ... from the officehome object family."""
    _check(n, size, classes, palette=palette)
    out = prepare_output_dir(Path(out), "--out", overwrite)
    digits = max(5, len(str(n - 1)))
    for i in range(n):
        rng = _rng(seed, "ssl", i)
        write_image(out / f"{i:0{digits}d}.jpg", render_object(rng, int(rng.integers(classes)), size, palette))
    return f"wrote {n} unlabeled {size}x{size} JPEG images (from {classes} object classes) to {out}"


def synth_officehome(
    out: str | os.PathLike, n: int = 500, size: int = 64, classes: int = 10, seed: int = 0, *,
    overwrite: bool = False, palette: str = "random",
) -> str:
    """Office-Home layout: `train/`, `val/` of `00017.jpg`-like names + `train.csv`, `val.csv` (id,filename,label).

    Every class is in both splits: of each class's images every 5th (the first included) goes to val (~20%).
    """
    _check(n, size, classes, palette=palette)
    if n < 2 * classes:
        raise DlcvkitError(f"--n {n} is too small for {classes} classes in two splits; use --n {2 * classes} or more")
    out = prepare_output_dir(Path(out), "--out", overwrite)
    labels = np.random.default_rng([seed, _KIND_SEED["officehome"]]).permutation(np.arange(n) % classes)
    seen = np.zeros(classes, dtype=int)
    rows = {"train": [], "val": []}
    digits = max(5, len(str(n - 1)))
    for i, label in enumerate(labels.tolist()):
        split = "val" if seen[label] % 5 == 0 else "train"
        seen[label] += 1
        name = f"{i:0{digits}d}.jpg"
        write_image(out / split / name, render_object(_rng(seed, "officehome", i), label, size, palette))
        rows[split].append((name, label))
    for split, split_rows in rows.items():
        with open(out / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["id", "filename", "label"])
            writer.writerows((k, name, label) for k, (name, label) in enumerate(split_rows))
    return (
        f"wrote {len(rows['train'])} train + {len(rows['val'])} val {size}x{size} JPEG images of {classes} classes "
        f"(train/, val/, train.csv, val.csv; Office-Home layout) to {out}"
    )


def synth_seg(
    out: str | os.PathLike, n: int = 20, size: int = 512, seed: int = 0, *, overwrite: bool = False,
    bands: int | None = None,
) -> str:
    """P2 layout: a flat folder of `0000_sat.jpg` (JPEG quality 90) + `0000_mask.png` (exact course colours);
    with `bands`, georeferenced multispectral `0000_sat.tif` rasters of that many bands instead (`geotiff`)."""
    _check(n, size, None, min_size=32)
    if bands is not None and not 1 <= bands <= MAX_BANDS:
        raise DlcvkitError(f"--bands must be 1..{MAX_BANDS}, got {bands}")
    out = prepare_output_dir(Path(out), "--out", overwrite)
    digits = max(4, len(str(n - 1)))
    for i in range(n):
        rng = _rng(seed, "seg", i)
        image, ids = render_land_cover(rng, size, must_have=i % NUM_CLASSES)
        if bands is None:
            write_image(out / f"{i:0{digits}d}_sat.jpg", image)
        else:
            write_geotiff(out / f"{i:0{digits}d}_sat.tif", multispectral(rng, image, ids, bands, seed), i)
        write_mask(out / f"{i:0{digits}d}_mask.png", ids)
    if bands is None:
        return f"wrote {n} {size}x{size} image/mask pairs (xxxx_sat.jpg + xxxx_mask.png, P2 layout) to {out}"
    return (f"wrote {n} {size}x{size} {bands}-band uint16 GeoTIFF/mask pairs (xxxx_sat.tif in {SYNTH_CRS}, "
            f"{SYNTH_PIXEL} m pixels + xxxx_mask.png) to {out}")


# ------------------------------------------------------------------------------------ multispectral GeoTIFFs

MAX_BANDS = 13  # Sentinel-2's band count
SYNTH_CRS = "EPSG:32633"  # WGS 84 / UTM zone 33N
SYNTH_ORIGIN = (500_000.0, 5_000_000.0)  # upper-left corner of tile 0 (metres); tile i lies i tiles east
SYNTH_PIXEL = 10  # metres, as Sentinel-2's visible and near-infrared bands


def multispectral(rng: np.random.Generator, rgb: torch.Tensor, ids: torch.Tensor, bands: int,
                  seed: int) -> np.ndarray:
    """uint16 `c h w` raw values of a land-cover image: its RGB as 12-bit-like digital numbers, then bands
    beyond the third whose level depends on the class (as vegetation's near-infrared), one table per seed,
    shaded by the image's brightness and noisy."""
    grey = rgb.float().mean(dim=0).numpy()
    levels = np.random.default_rng([seed, _KIND_SEED["seg"]]).uniform(800, 6000, (MAX_BANDS, NUM_CLASSES))
    out = np.empty((bands, *grey.shape), dtype=np.float64)
    for band in range(bands):
        if band < 3:
            out[band] = 16.0 * rgb[band].numpy() + 200
        else:
            out[band] = levels[band][ids.numpy()] + 8.0 * (grey - 128)
        out[band] += rng.normal(0, 40, grey.shape)
    return np.clip(out + 0.5, 0, 65535).astype(np.uint16)


def write_geotiff(path: Path, values: np.ndarray, index: int) -> None:
    """`values` `c h w` as a GeoTIFF in SYNTH_CRS, tile `index` of a row of tiles laid east of SYNTH_ORIGIN."""
    import rasterio  # only for GeoTIFFs
    from rasterio.transform import from_origin

    bands, height, width = values.shape
    transform = from_origin(SYNTH_ORIGIN[0] + index * width * SYNTH_PIXEL, SYNTH_ORIGIN[1], SYNTH_PIXEL, SYNTH_PIXEL)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=bands, dtype=values.dtype.name,
                       crs=SYNTH_CRS, transform=transform) as dst:
        dst.write(values)
