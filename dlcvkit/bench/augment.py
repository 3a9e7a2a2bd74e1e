"""BYOL's two views, images/s: the kornia pipeline the BYOL task runs (whole batch on the device, parameters
drawn per image) vs the same operations as torchvision v2 transforms applied per sample in DataLoader workers,
and optionally the kornia pipeline under `torch.compile`, or with its random parameters drawn on the device
(`kornia_device_rng`; the task leaves the pipeline on the CPU, where kornia draws them and reads them back
without waiting for the GPU).

Both start from the same uint8 images (what the loader hands the task) and end with two float views in [0, 1]
on the device; normalisation is left out of both.
"""

from __future__ import annotations

import logging

import torch
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader, Dataset

from dlcvkit.augment.views import blur_kernel
from dlcvkit.tasks.byol import byol_views
from dlcvkit.augment.common import to_unit
from dlcvkit.bench.timing import ResultMismatch, measure, measure_interleaved, record

BENCH = "augment"
OPTIONAL = ("kornia_compiled", "kornia_jitter_compiled", "kornia_device_rng")  # may fail: recorded with the error
RUN_STEPS = 100  # a short run, for the speed-up with the compile counted (`run_speedup`)


def torchvision_view(size: int, blur_p: float, solarize_p: float, grayscale_p: float = 0.2) -> T.Compose:
    """`dlcvkit.augment.views.paper_view` with torchvision v2 transforms, one image at a time. The geometric and
    colour steps run on uint8 (torchvision's fast path); solarize runs after the conversion to [0, 1], so its
    threshold is kornia's 0.5."""
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(p=grayscale_p),
        T.RandomApply([T.GaussianBlur(blur_kernel(size), sigma=(0.1, 2.0))], p=blur_p),
        T.ToDtype(torch.float32, scale=True),
        T.RandomSolarize(0.5, p=solarize_p),
    ])


class TwoViewSamples(Dataset):
    """`length` samples cycling over `images` (n 3 h w, uint8); each returns the two torchvision views."""

    def __init__(self, images: torch.Tensor, length: int, size: int) -> None:
        self.images, self.length = images, length
        # the paper's asymmetric pair, as byol_views("paper") builds it
        self.view1 = torchvision_view(size, blur_p=1.0, solarize_p=0.0)
        self.view2 = torchvision_view(size, blur_p=0.1, solarize_p=0.2)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[i % len(self.images)]
        return self.view1(image), self.view2(image)


def bench_augment(
    sizes: list[int],
    batches: list[int],
    *,
    device: torch.device,
    repeats: int,
    warmup: int,
    workers: int,
    batches_per_repeat: int,
    contenders: tuple[str, ...] = ("kornia", "torchvision"),
) -> list[dict]:
    """Records for every (size, batch) case; `contenders` from kornia, kornia_compiled (the whole pipeline under
    torch.compile), kornia_jitter_compiled (`byol_views(..., compile=True)`), kornia_device_rng, torchvision.
    A repeat augments `batches_per_repeat` batches (a multiple of `workers` keeps every worker
    busy). The optional kornia variants that fail are recorded with their error."""
    if {"kornia_compiled", "kornia_jitter_compiled"} & set(contenders):
        logging.getLogger("torch._dynamo").setLevel(logging.ERROR)  # kornia's graph breaks are expected
    records = []
    for size in sizes:
        for batch in batches:
            images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(0))
            case = f"{size}px b{batch}"
            items = batch * batches_per_repeat
            params = {"img_size": size, "batch": batch, "workers": workers}
            fns, firsts = {}, {}
            torch._dynamo.reset()  # every case pays its own compiles (in its contenders' first calls), as a run would
            for contender in contenders:
                try:
                    if contender == "torchvision":
                        fn = _torchvision_fn(images, size, device, workers, batches_per_repeat)
                    else:
                        fn = _kornia_fn(images, size, device, batches_per_repeat,
                                        compiled=contender == "kornia_compiled",
                                        rng_on_device=contender == "kornia_device_rng",
                                        jitter_compiled=contender == "kornia_jitter_compiled")
                    firsts[contender] = measure(fn, items=items, repeats=1, warmup=0, device=device)  # compiles
                    fns[contender] = fn
                except Exception as e:  # noqa: BLE001 - torch.compile, kornia's device RNG fail in many ways
                    if contender not in OPTIONAL:
                        raise
                    records.append(record(BENCH, case, contender, None, error=f"{type(e).__name__}: {e}"[:300],
                                          **params))
            timings = measure_interleaved(fns, items=items, repeats=repeats, warmup=max(warmup - 1, 0),
                                          device=device)
            records += [record(BENCH, case, name, timing, **params, first_call_ms=1e3 * firsts[name].median)
                        for name, timing in timings.items()]
    return add_run_speedups(records)


def add_run_speedups(records: list[dict]) -> list[dict]:
    """`run_speedup`: torchvision's time over the contender's for RUN_STEPS batches of the case, each counting its
    first call once (the compile of the compiled contenders, the workers' start of torchvision's)."""
    reference = {r["case"]: r for r in records if r["contender"] == "torchvision" and r["ms_median"] is not None}
    for r in records:
        ref = reference.get(r["case"])
        if ref is None or r["ms_median"] is None:
            continue
        r["run_speedup"] = _run_ms(ref) / _run_ms(r)
    return records


def _run_ms(r: dict) -> float:
    """Milliseconds for RUN_STEPS batches: the first call as measured, the rest at the median rate."""
    images = RUN_STEPS * r["batch"]
    return r["first_call_ms"] + (images - r["items"]) * r["ms_median"] / r["items"]


def _kornia_fn(images: torch.Tensor, size: int, device: torch.device, batches: int, compiled: bool,
               rng_on_device: bool = False, jitter_compiled: bool = False):
    # as the task keeps it: random parameters drawn on the CPU
    views = byol_views("paper", size, compile=jitter_compiled)
    if rng_on_device:
        views = views.to(device)
    if compiled:
        views = torch.compile(views)

    def run() -> None:
        for _ in range(batches):
            view1, view2 = views(to_unit(images.to(device, non_blocking=True)))
            _check_views(view1, view2, images)

    return run


def _torchvision_fn(images: torch.Tensor, size: int, device: torch.device, workers: int, batches: int):
    dataset = TwoViewSamples(images, len(images) * batches, size)
    loader = DataLoader(dataset, batch_size=len(images), num_workers=workers, persistent_workers=workers > 0,
                        pin_memory=device.type == "cuda")

    def run() -> None:  # one pass = `batches` batches, produced by the workers in parallel
        for view1, view2 in loader:
            view1, view2 = view1.to(device, non_blocking=True), view2.to(device, non_blocking=True)
            _check_views(view1, view2, images)

    return run


def _check_views(view1: torch.Tensor, view2: torch.Tensor, images: torch.Tensor) -> None:
    """Both contenders must deliver the same thing: two float views per image at the input's size."""
    if view1.shape != images.shape or view2.shape != images.shape or view1.dtype != torch.float32:
        raise ResultMismatch(f"views of shape {tuple(view1.shape)} {view1.dtype} for images {tuple(images.shape)}")
