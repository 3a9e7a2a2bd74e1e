"""Which samples each process reads: seeded global training batches and exact, unpadded evaluation shards.

Written here rather than taken from `accelerator.prepare(dataloader)` because the engine needs two things
accelerate's samplers do not give together: (1) the data position is a pure function of (seed, epoch, step),
so `--resume` skips to the middle of an epoch without reading the skipped images, and the global batch is the
same for 1 and N processes; (2) evaluation counts every sample exactly once (accelerate pads the last round
with repeated samples, which a summed confusion matrix would count twice).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch.utils.data import Sampler

from dlcvkit.errors import DlcvkitError


class TrainBatches(Sampler[list[int]]):
    """This process's slice of each global training batch.

    Epoch e visits `randperm(n)` drawn from a generator seeded with `seed + e` (or 0..n−1 without shuffle), in
    global batches of `global_batch` (the incomplete last batch is dropped); process r takes the r-th of
    `world` equal contiguous slices of each batch.
    """

    def __init__(self, n: int, global_batch: int, rank: int, world: int, seed: int, shuffle: bool = True) -> None:
        if global_batch % world:
            raise DlcvkitError(
                f"data.batch_size={global_batch} is the global batch and must divide evenly by the {world} processes"
            )
        if n < global_batch:
            raise DlcvkitError(
                f"the training set has {n} samples, fewer than one batch (data.batch_size={global_batch})"
            )
        self.n, self.global_batch, self.rank, self.world = n, global_batch, rank, world
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.global_batch

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        """Iterate epoch `epoch` from global batch `start_batch` on."""
        self.epoch, self.start = epoch, start_batch

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.n)
        local = self.global_batch // self.world
        for b in range(self.start, self.batches_per_epoch):
            first = b * self.global_batch + self.rank * local
            yield order[first : first + local].tolist()


class EvalBatches(Sampler[list[int]]):
    """Every sample once, in fixed batches 0..b−1, b..2b−1, ...; batch i goes to process i mod world.

    The batches have the same members on any number of processes, so each sample's output is computed in the
    same batch (bit-identical on CPU) and metrics reduced over processes equal the single-process ones exactly.
    With `keys` (one per sample, e.g. image sizes) a batch holds samples of one key only, so that images of
    several sizes still stack: the samples of each key in order, keys in order of first appearance.
    """

    def __init__(self, n: int, batch_size: int, rank: int, world: int, keys: Sequence[Hashable] | None = None) -> None:
        if batch_size < 1:
            raise DlcvkitError(f"the evaluation batch size must be at least 1 (--batch-size), got {batch_size}")
        groups: dict[Hashable, list[int]] = {}
        for i, key in enumerate(keys if keys is not None else [None] * n):
            groups.setdefault(key, []).append(i)
        batches = [group[s : s + batch_size] for group in groups.values() for s in range(0, len(group), batch_size)]
        self.batches = batches[rank::world]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        yield from self.batches
