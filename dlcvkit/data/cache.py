"""The decoded-image cache (`data.cache`): every sample of a split decoded and resized once, then read as slices.

It wraps any dataset of the per-sample protocol (`dlcvkit.data.samples`) whose samples hold tensors of one size:

- "memory": the tensors in shared memory, filled in the main process before the DataLoader workers start, so
  that the workers read the same pages (forked workers inherit them; spawned ones get them by handle);
- "disk": one memory-mapped file per split in `data.cache_dir` (`cachefile`): a changed, added or removed file
  of the split gives a new file, which then replaces the old one; in a distributed run the local main process
  fills it while the others wait, then all map it. The local main process verifies its checksums when it opens
  the file, and rebuilds a damaged one (one line says so).

The engine's loaders read a cache in the main process (`engine.loaders.loader_workers`); any DataLoader with
workers over it shares its pages as above. Names, labels, ids and files stay in the wrapped dataset. A cache that
cannot be made (read-only folder, full disk or shared memory, samples of different sizes) leaves the data as it
is, with one warning: the run goes on, decoding.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import track

from dlcvkit.data.cachefile import (CHUNK, SUFFIX, CacheUnavailable, cache_key, earlier_files, layout, map_file,
                                    open_verified, read_header, write)
from dlcvkit.data.samples import FileDataset


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/dlcvkit/decoded`, or `~/.cache/dlcvkit/decoded`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dlcvkit" / "decoded"


class CachedSamples(FileDataset):
    """`dataset` with its tensors read from the cache: `tensors`, in shared memory or mapped from the disk file
    `path` (mapped anew where the dataset is unpickled, in a spawned worker); per-sample lists and files from
    `dataset`."""

    def __init__(self, dataset: FileDataset, header: dict, *, tensors: dict[str, torch.Tensor] | None = None,
                 path: Path | None = None) -> None:
        self.dataset, self.header, self.path = dataset, header, path
        self._tensors = tensors

    @property
    def names(self) -> list[str]:
        return self.dataset.names

    @property
    def labels(self) -> list[int] | None:
        return self.dataset.labels

    @property
    def ids(self) -> list[str] | None:
        return self.dataset.ids

    def files(self, i: int) -> list[Path]:
        return self.dataset.files(i)

    def label_source(self, i: int) -> str:
        return self.dataset.label_source(i)

    def __getitem__(self, i: int) -> dict:
        if self._tensors is None:
            self._tensors = map_file(self.path, self.header)
        sample = self.plain(i)
        for name, tensor in self._tensors.items():
            sample[name] = tensor[i].clone()
        return sample

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.path is not None:  # a spawned worker maps the file itself rather than receive a copy
            state["_tensors"] = None
        return state


def cache_splits(splits: dict[str, FileDataset | None], mode: str, cache_dir: str | os.PathLike = "", *,
                 workers: int = 0, accelerator=None) -> tuple[list[FileDataset | None], list[str]]:
    """The datasets of `splits` (what -> dataset or None) behind the cache `mode` ("none", "memory" or "disk"),
    and lines for the user.

    After one cache that cannot be made the others are not tried (the same folder or memory would fail again):
    one warning, and those splits are decoded every epoch as without a cache.
    """
    out, notes = list(splits.values()), []
    if mode == "none":
        return out, notes
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    show = accelerator is None or accelerator.is_main_process
    for k, (what, dataset) in enumerate(splits.items()):
        if dataset is None:
            continue
        try:
            if mode == "memory":
                out[k] = _fill_memory(dataset, workers, what, show)
                notes.append(f"{what}: {len(dataset)} samples decoded once into shared memory")
            else:
                out[k], note = _disk_cache(dataset, folder, workers, accelerator, what, show)
                notes += [note] if note else []
        except CacheUnavailable as e:
            notes.append(f"warning: {e}; going on without the cache")
            break
    return out, notes


def cached_for_inference(dataset: FileDataset, what: str, mode: str, cache_dir: str | os.PathLike, workers: int,
                         accelerator) -> FileDataset:
    """`dataset` behind the cache of an inference command (`--cache`); its notes on stderr (main process)."""
    [dataset], notes = cache_splits({what: dataset}, mode, cache_dir, workers=workers, accelerator=accelerator)
    if accelerator.is_main_process:
        for note in notes:
            print(f"dlcvkit: {note}", file=sys.stderr)
    return dataset


# ------------------------------------------------------------------------------------------------ filling


def _samples(dataset: FileDataset, workers: int, what: str, show: bool) -> Iterator[tuple[int, dict]]:
    """(i, sample i) in order, decoded by `workers` threads (the decoders release the GIL)."""
    chunks, console = range(0, len(dataset), CHUNK), Console(stderr=True)
    if show and console.is_terminal:  # a long fill says how far it got; a log file gets no bar
        chunks = track(chunks, description=f"decoding {what} into the cache", transient=True, console=console)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in chunks:
            indices = range(start, min(start + CHUNK, len(dataset)))
            yield from zip(indices, pool.map(dataset.__getitem__, indices))


def _check(dataset: FileDataset, i: int, sample: dict, header: dict, what: str) -> None:
    """Sample `i` fits the cache: the same tensor shapes as sample 0, and the plain values of `dataset.plain(i)`."""
    for name, field in header["fields"].items():
        value = sample[name]
        if list(value.shape) != field["shape"] or str(value.numpy().dtype) != field["dtype"]:
            raise CacheUnavailable(f"{what}: sample {i} has {name} {tuple(value.shape)} but sample 0 "
                                   f"{tuple(field['shape'])}; only samples of one size can be cached")
    plain = {k: v for k, v in sample.items() if not isinstance(v, torch.Tensor)}
    if plain != dataset.plain(i):  # a dataset not following the protocol: a bug, not bad input
        raise TypeError(f"{type(dataset).__name__} sample {i}: plain values {plain} are not its "
                        f"per-sample lists' {dataset.plain(i)}")


def _checked(dataset: FileDataset, header: dict, workers: int, what: str, show: bool) -> Iterator[tuple[int, dict]]:
    """`_samples`, each checked to fit the cache `header` (see `_check`)."""
    for i, sample in _samples(dataset, workers, what, show):
        _check(dataset, i, sample, header, what)
        yield i, sample


def _fill_memory(dataset: FileDataset, workers: int, what: str, show: bool) -> CachedSamples:
    """Every sample decoded into shared-memory tensors, made here, before any DataLoader worker starts."""
    header = layout(dataset[0], len(dataset))
    shm = Path("/dev/shm")  # where torch puts shared memory on Linux; writing past its end kills the process
    if shm.is_dir() and shutil.disk_usage(shm).free < header["bytes"]:
        raise CacheUnavailable(f"{what} needs {_size(header['bytes'])} of shared memory, {shm} has "
                               f"{_size(shutil.disk_usage(shm).free)} free")
    try:
        tensors = {name: torch.empty((len(dataset), *f["shape"]), dtype=getattr(torch, f["dtype"])).share_memory_()
                   for name, f in header["fields"].items()}
    except RuntimeError as e:  # torch reports a failed shared-memory allocation as a RuntimeError
        raise CacheUnavailable(f"cannot allocate {_size(header['bytes'])} of shared memory for {what} ({e})") from e
    for i, sample in _checked(dataset, header, workers, what, show):
        for name, tensor in tensors.items():
            tensor[i] = sample[name]
    return CachedSamples(dataset, header, tensors=tensors)


def _disk_cache(dataset: FileDataset, folder: Path, workers: int, accelerator, what: str,
                show: bool) -> tuple[FileDataset, str | None]:
    """The split's cache file in `folder`: read if complete and intact, else (re)filled by the local main process
    while the node's other processes wait, then read by them."""
    split, key = cache_key(dataset)
    path = folder / f"{split}-{key}{SUFFIX}"
    filler = accelerator is None or accelerator.is_local_main_process
    header, note, failure = None, None, None
    with accelerator.local_main_process_first() if accelerator is not None else contextlib.nullcontext():
        if not filler:  # the local main process has verified the file, or rewritten it, or failed and said so
            header = read_header(path, key, len(dataset))
        else:
            opened = open_verified(path, key, len(dataset), workers)
            try:
                header, note = ((opened, f"{what}: decoded samples read from {path}") if isinstance(opened, dict)
                                else _rebuild(dataset, folder, path, key, opened, workers, what, show))
            except Exception as e:  # noqa: BLE001 - raised below: first let the waiting processes go on
                failure = e
    if failure is not None:
        raise failure
    if header is None:  # the local main process could not write it, and said so
        return dataset, None
    # mapped here, so that forked workers inherit the mapping even if a later run replaces the file
    return CachedSamples(dataset, header, tensors=map_file(path, header), path=path), note


def _rebuild(dataset: FileDataset, folder: Path, path: Path, key: str, damage: str | None, workers: int, what: str,
             show: bool) -> tuple[dict, str]:
    """Fill the cache file `path` anew (none, a damaged one: `damage` says what is wrong, or an earlier
    version's); its header and the line for the user."""
    n, earlier = len(dataset), earlier_files(dataset, folder)
    if damage is not None:  # removed first: its room may be what the new file needs
        with contextlib.suppress(OSError):
            path.unlink()
    header = layout(dataset[0], n) | {"key": key}
    try:
        header = write(folder, path, header, _checked(dataset, header, workers, what, show), earlier, what)
    except CacheUnavailable as e:
        raise CacheUnavailable(f"{path} was damaged ({damage}); {e}" if damage else str(e)) from e
    if damage is not None:
        return header, f"{what}: {path} was damaged ({damage}): rebuilt, {n} samples decoded once into it"
    if earlier:
        return header, (f"{what}: {earlier[0]} was written by an earlier dlcvkit version (no checksums): replaced, "
                        f"{n} samples decoded once into {path}")
    return header, f"{what}: {n} samples decoded once into {path}"


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
