"""Loading throughput, samples/s: image files to uint8 batches of the training size through a DataLoader with 0
and 2 workers, for three shapes of the course's data (synthetic, written once into the bench folder):

- `officehome`: Office-Home-like photos, 3000x2000 JPEGs (smooth photo-like content, about 1 bit per pixel), to 224 px;
- `p2`: P2 tiles, 512x512 JPEG + PNG colour mask, read at 512 px (image and class ids);
- `mini`: Mini-ImageNet-like 84x84 JPEGs, up-sampled to 128 px.

Contenders (the speed-ups are against `dlcvkit decode`):

- `torchvision ImageFolder + PIL`: the usual user code, `torchvision.datasets.ImageFolder` with PIL decoding and
  `transforms.v2.Resize`; for P2, which has no class folders, the same per-sample PIL decoding of the image and
  of the mask, the mask read with the course's thresholds;
- `dlcvkit decode`: `read_image` + `resize_image` per sample (how the datasets read before the scaled decode);
- `dlcvkit scaled decode`: the datasets as they read now (`read_resized`: a reduced DCT scale where a JPEG is
  at least twice the size; P2 at 512 px reads at full scale, as before);
- `dlcvkit cache (warm)`: the same dataset behind the disk cache, filled before the timing (not timed); read in
  the main process whatever the number of workers asked, as the engine's loaders read it (`loader_workers`);
- `dlcvkit cache open (verify)`: not a loader: opening that warm cache as a run does, which verifies the checksum of
  every sample (once per run; `workers` threads), in samples/s.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2 as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder

from dlcvkit.bench.timing import check_equal, measure, record
from dlcvkit.data.cache import cache_splits
from dlcvkit.data.labeled import ImageFolderDataset
from dlcvkit.data.satellite import MASK_SUFFIX, SAT_SUFFIX, SatellitePairs
from dlcvkit.data.images import read_image, resize_image, write_image
from dlcvkit.data.synth import synth_seg
from dlcvkit.engine.loaders import loader_workers

BENCH = "loader"
REFERENCE = "dlcvkit decode"
CONTENDERS = ("torchvision ImageFolder + PIL", "dlcvkit decode", "dlcvkit scaled decode", "dlcvkit cache (warm)")
OPEN = "dlcvkit cache open (verify)"
CHECKED = 4  # samples compared between contenders before the timing
SCALED_ATOL = 4  # grey levels: the scaled decode's bound against the full decode (tests/data/test_scaled_decode.py)
# The course's mask reader: 4 r + 2 g + b of the thresholded colour -> class id (red, code 4: no class, here 6).
COURSE_MASK_CODES = np.array([6, 4, 3, 0, 6, 2, 1, 5], dtype=np.uint8)


def photo_like(seed: int, height: int, width: int, noise: float = 2.0) -> torch.Tensor:
    """A smooth, photo-like uint8 image `3 h w`: smooth noise at octaves of 4x finer detail and half the contrast
    (a 1/f-like spectrum, as natural images have), plus a little sensor noise."""
    generator = torch.Generator().manual_seed(seed)
    img = torch.full((1, 3, height, width), 128.0)
    cells, contrast = 3, 60.0
    while cells < min(height, width) / 8:
        grid = torch.randn(1, 3, cells + 1, math.ceil(cells * width / height) + 1, generator=generator)
        img += contrast * torch.nn.functional.interpolate(grid, size=(height, width), mode="bicubic",
                                                          align_corners=True)
        cells, contrast = 4 * cells, contrast / 2
    img += noise * torch.randn(img.shape, generator=generator)
    return img[0].round().clamp(0, 255).to(torch.uint8)


class CourseMaskPairs(Dataset):
    """P2 the way user code reads it: PIL for the image, PIL + numpy with the course's thresholds for the mask."""

    def __init__(self, root: Path) -> None:
        self.stems = sorted(p.name[: -len(SAT_SUFFIX)] for p in root.glob(f"*{SAT_SUFFIX}"))
        self.root, self.to_tensor = root, T.PILToTensor()

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, i: int) -> dict:
        with Image.open(self.root / f"{self.stems[i]}{SAT_SUFFIX}") as img:
            image = self.to_tensor(img.convert("RGB"))
        with Image.open(self.root / f"{self.stems[i]}{MASK_SUFFIX}") as img:
            bits = (np.asarray(img.convert("RGB")) >= 128).astype(np.uint8)
        mask = COURSE_MASK_CODES[4 * bits[..., 0] + 2 * bits[..., 1] + bits[..., 2]]
        return {"image": image, "mask": torch.from_numpy(mask)}


class FullDecode(Dataset):
    """An ImageFolderDataset read the way the datasets did before the scaled decode: full decode, then resize."""

    def __init__(self, dataset: ImageFolderDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        image = resize_image(read_image(self.dataset.files(i)[0]), self.dataset.size)
        return {"image": image, "label": self.dataset.labels[i], "name": self.dataset.names[i]}


def synthetic_photos(folder: Path, n: int, height: int, width: int, classes: int = 2) -> Path:
    """`n` photo-like JPEGs in an ImageFolder layout (FOLDER/class_k/i.jpg), written once."""
    if not (folder / ".complete").exists():
        for i in range(n):
            write_image(folder / f"class_{i % classes}" / f"{i:05d}.jpg", photo_like(i, height, width))
        (folder / ".complete").touch()
    return folder


def synthetic_pairs(folder: Path, n: int, size: int) -> Path:
    """`n` P2 pairs (synthetic land cover), written once."""
    if not (folder / ".complete").exists():
        synth_seg(folder, n, size, overwrite=True)
        (folder / ".complete").touch()
    return folder


def contenders(case: str, spec: dict, cache: Path) -> dict[str, Dataset]:
    """The four datasets of a case, by contender name, over the case's synthetic files in `cache`."""
    size = spec["size"]
    if case == "p2":
        root = synthetic_pairs(cache / f"loader_p2_{spec['width']}", spec["n"], spec["width"])
        decoded = SatellitePairs(root, size=size)
        scaled = SatellitePairs(root, size=size)
        user = CourseMaskPairs(root)
    else:
        root = synthetic_photos(cache / f"loader_{case}_{spec['width']}x{spec['height']}", spec["n"], spec["height"],
                                spec["width"])
        scaled = ImageFolderDataset(root, size=size)
        decoded = FullDecode(ImageFolderDataset(root, size=size))
        user = ImageFolder(str(root), transform=T.Compose([T.Resize((size, size)), T.PILToTensor()]))
    (warm,), _ = cache_splits({case: scaled}, "disk", cache / "decoded")
    return dict(zip(CONTENDERS, (user, decoded, scaled, warm)))


def check_contenders(datasets: dict[str, Dataset]) -> None:
    """The cache gives the scaled decode's samples exactly, and the scaled decode stays within SCALED_ATOL of the
    full decode; the user code's own resize is not compared (PIL's filter differs)."""
    decoded, scaled, warm = (datasets[name] for name in CONTENDERS[1:])
    for i in range(min(len(scaled), CHECKED)):
        for key, value in scaled[i].items():
            if isinstance(value, torch.Tensor):
                check_equal(CONTENDERS[3], CONTENDERS[2], value, warm[i][key])
                check_equal(CONTENDERS[2], CONTENDERS[1], decoded[i][key].float(), value.float(), atol=SCALED_ATOL)


def bench_loader(cases: dict[str, dict], cache: Path, *, workers: list[int], repeats: int, warmup: int) -> list[dict]:
    """Records of every contender, case (name -> n, width, height, size, batch) and number of workers."""
    records = []
    for case, spec in cases.items():
        datasets = contenders(case, spec, cache)
        check_contenders(datasets)
        source = f"{spec['width']}x{spec['height']}"
        params = {"source": source, "img_size": spec["size"], "batch": spec["batch"], "images": spec["n"]}
        for count in workers:
            label = f"{case} {source} -> {spec['size']} px, {count} workers"
            for contender, dataset in datasets.items():
                used = loader_workers(dataset, count)  # the engine's rule: a warm cache is read in-process
                loader = DataLoader(dataset, batch_size=spec["batch"], num_workers=used, persistent_workers=used > 0)
                timing = measure(partial(_drain, loader), items=len(dataset), repeats=repeats, warmup=warmup,
                                 device=torch.device("cpu"))
                records.append(record(BENCH, label, contender, timing, workers=count, **params))
            opening = partial(cache_splits, {case: datasets[CONTENDERS[2]]}, "disk", cache / "decoded", workers=count)
            timing = measure(opening, items=spec["n"], repeats=repeats, warmup=warmup, device=torch.device("cpu"))
            records.append(record(BENCH, label, OPEN, timing, workers=count, **params))
    return records


def _drain(loader: DataLoader) -> None:
    for _ in loader:
        pass
