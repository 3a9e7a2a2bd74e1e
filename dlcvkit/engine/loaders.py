"""DataLoaders over the engine's samplers: decoding in worker processes, batches moved to the device."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader, Dataset

from dlcvkit.config import DataConfig
from dlcvkit.data.cache import CachedSamples
from dlcvkit.engine.interrupt import end_workers_at_exit, ignore_interrupts
from dlcvkit.engine.sampling import EvalBatches, TrainBatches


def loader_workers(dataset: Dataset, num_workers: int) -> int:
    """The worker processes for `dataset`: `num_workers`, but none for a decoded-image cache, which the main
    process reads itself: a sample is a slice copy of a few microseconds, and workers would only hand the same
    bytes over through shared memory (4-15x slower in `dlcvkit bench loader`, P2 and Office-Home-like)."""
    return 0 if isinstance(dataset, CachedSamples) else num_workers


def make_train_loader(dataset: Dataset, sampler: TrainBatches, num_workers: int, device: torch.device,
                      collate: Callable[[list], dict] | None = None) -> DataLoader:
    """Workers decode, resize and `collate` (default: torch's); the loader's own generator keeps worker seeding off
    the global RNG, so that starting an epoch consumes no random numbers (a resumed run draws exactly what the
    uninterrupted one did)."""
    num_workers = loader_workers(dataset, num_workers)
    if num_workers:
        end_workers_at_exit()
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
        generator=torch.Generator(),
        worker_init_fn=ignore_interrupts,  # Ctrl-C is the loop's to handle (it saves a checkpoint)
    )


def make_eval_loader(dataset: Dataset, data: DataConfig, accelerator: Accelerator,
                     keys: Sequence[Hashable] | None = None,
                     collate: Callable[[list], dict] | None = None) -> DataLoader:
    """This process's share of the evaluation set, every sample exactly once over all processes; with `keys`
    (e.g. image sizes) only samples of one key share a batch; `collate` makes the batches (default: torch's)."""
    batches = EvalBatches(
        len(dataset), data.eval_batch_size or data.batch_size, accelerator.process_index, accelerator.num_processes,
        keys,
    )
    num_workers = loader_workers(dataset, data.num_workers)
    if num_workers:
        end_workers_at_exit()
    return DataLoader(
        dataset,
        batch_sampler=batches,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=accelerator.device.type == "cuda",
        persistent_workers=num_workers > 0,
        generator=torch.Generator(),
        worker_init_fn=ignore_interrupts,
    )


def device_batches(loader: Iterable[dict], device: torch.device) -> Iterator[dict]:
    """The loader's batches on `device`."""
    for batch in loader:
        yield send_to_device(batch, device, non_blocking=True)
