"""The decoded-image cache (`data.cache`): every sample of a split decoded and resized once, then read as slices.

It wraps any dataset of `dlcvkit.data.datasets` (fixed-size uint8 tensors plus plain values, and `files(i)`):

- "memory": the tensors in shared memory, filled in the main process before the DataLoader workers start, so
  that the workers read the same pages (forked workers inherit them; spawned ones get them by handle);
- "disk": one memory-mapped file per split in `data.cache_dir`, named by the split and by a key of its file
  list, sizes and modification times: a changed, added or removed file gives a new key, hence a new file, which
  then replaces the old one. It is written under a temporary name and renamed when complete, so a killed fill
  is never read; in a distributed run the local main process fills it while the others wait, then all map it.
  The file holds a crc32 of every sample's every tensor, of that checksum table and of its header; the local
  main process verifies them all when it opens the file, and rebuilds a damaged one (one line says so).

The engine's loaders read a cache in the main process (`engine.loaders.loader_workers`); any DataLoader with
workers over it shares its pages as above. Names, labels and ids stay in the wrapped dataset. A cache that
cannot be made (read-only folder, full disk or shared memory, samples of different sizes) leaves the data as it
is, with one warning: the run goes on, decoding.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import track
from torch.utils.data import Dataset

from dlcvkit.errors import DlcvkitError

FORMAT = "dlcvkit decoded-image cache 2"  # change it with anything that changes the decoded samples or the file
EARLIER_FORMATS = ("dlcvkit decoded-image cache 1",)  # their files, named by their format, are replaced
SUFFIX = ".dlcvcache"
ALIGN = 4096  # the header line fills the first page at most; every array starts on a page boundary
PLAIN = {"name": "names", "label": "labels", "id": "ids"}  # sample key -> the dataset's per-sample list
CHUNK = 256  # samples decoded ahead of the writer


class CacheUnavailable(Exception):
    """The cache cannot be made; the message says why, for the one warning line."""


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/dlcvkit/decoded`, or `~/.cache/dlcvkit/decoded`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dlcvkit" / "decoded"


class CachedSamples(Dataset):
    """`dataset` with its tensors read from the cache: `tensors`, in shared memory or mapped from the disk file
    `path` (mapped anew where the dataset is unpickled, in a spawned worker); plain values and every other
    attribute from `dataset`."""

    def __init__(self, dataset: Dataset, header: dict, *, tensors: dict[str, torch.Tensor] | None = None,
                 path: Path | None = None) -> None:
        self.dataset, self.header, self.path = dataset, header, path
        self._tensors = tensors

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        if self._tensors is None:
            self._tensors = _map(self.path, self.header)
        sample = plain_values(self.dataset, i)
        for name, tensor in self._tensors.items():
            sample[name] = tensor[i].clone()
        return sample

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.path is not None:  # a spawned worker maps the file itself rather than receive a copy
            state["_tensors"] = None
        return state

    def __getattr__(self, name: str):
        if name == "dataset" or name.startswith("__"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


def plain_values(dataset: Dataset, i: int) -> dict:
    """The non-tensor values of sample `i`, from the dataset's per-sample lists (`names`, `labels`, `ids`)."""
    sample = {}
    for key, attr in PLAIN.items():
        values = getattr(dataset, attr, None)
        if values is not None:
            sample[key] = values[i]
    return sample


def cache_splits(splits: dict[str, Dataset | None], mode: str, cache_dir: str | os.PathLike = "", *,
                 workers: int = 0, accelerator=None) -> tuple[list[Dataset | None], list[str]]:
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


def cached_for_inference(dataset: Dataset, what: str, mode: str, cache_dir: str | os.PathLike, workers: int,
                         accelerator) -> Dataset:
    """`dataset` behind the cache of an inference command (`--cache`); its notes on stderr (main process)."""
    [dataset], notes = cache_splits({what: dataset}, mode, cache_dir, workers=workers, accelerator=accelerator)
    if accelerator.is_main_process:
        for note in notes:
            print(f"dlcvkit: {note}", file=sys.stderr)
    return dataset


# ------------------------------------------------------------------------------------------------ filling


def _layout(first: dict, length: int) -> dict:
    """The header of a cache of `length` samples shaped like `first`: every tensor field's dtype, shape and offset
    in the file (the plain values are not stored), and the file's size in bytes."""
    fields, offset = {}, ALIGN
    for name, value in first.items():
        if isinstance(value, torch.Tensor):
            fields[name] = {"dtype": str(value.numpy().dtype), "shape": list(value.shape), "offset": offset}
            offset = _align(offset + length * value.numel() * value.element_size())
    return {"format": FORMAT, "length": length, "fields": fields, "bytes": offset}


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _samples(dataset: Dataset, workers: int, what: str, show: bool) -> Iterator[tuple[int, dict]]:
    """(i, sample i) in order, decoded by `workers` threads (the decoders release the GIL)."""
    chunks, console = range(0, len(dataset), CHUNK), Console(stderr=True)
    if show and console.is_terminal:  # a long fill says how far it got; a log file gets no bar
        chunks = track(chunks, description=f"decoding {what} into the cache", transient=True, console=console)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in chunks:
            indices = range(start, min(start + CHUNK, len(dataset)))
            yield from zip(indices, pool.map(dataset.__getitem__, indices))


def _check(dataset: Dataset, i: int, sample: dict, header: dict, what: str) -> None:
    """Sample `i` fits the cache: the same tensor shapes as sample 0, and plain values the dataset's lists give."""
    for name, field in header["fields"].items():
        value = sample[name]
        if list(value.shape) != field["shape"] or str(value.numpy().dtype) != field["dtype"]:
            raise CacheUnavailable(f"{what}: sample {i} has {name} {tuple(value.shape)} but sample 0 "
                                   f"{tuple(field['shape'])}; only samples of one size can be cached")
    plain = {k: v for k, v in sample.items() if not isinstance(v, torch.Tensor)}
    if plain != plain_values(dataset, i):  # a dataset not following the convention: a bug, not bad input
        raise TypeError(f"{type(dataset).__name__} sample {i}: plain values {plain} are not its "
                        f"{', '.join(PLAIN.values())} lists' {plain_values(dataset, i)}")


def _fill_memory(dataset: Dataset, workers: int, what: str, show: bool) -> CachedSamples:
    """Every sample decoded into shared-memory tensors, made here, before any DataLoader worker starts."""
    header = _layout(dataset[0], len(dataset))
    shm = Path("/dev/shm")  # where torch puts shared memory on Linux; writing past its end kills the process
    if shm.is_dir() and shutil.disk_usage(shm).free < header["bytes"]:
        raise CacheUnavailable(f"{what} needs {_size(header['bytes'])} of shared memory, {shm} has "
                               f"{_size(shutil.disk_usage(shm).free)} free")
    try:
        tensors = {name: torch.empty((len(dataset), *f["shape"]), dtype=getattr(torch, f["dtype"])).share_memory_()
                   for name, f in header["fields"].items()}
    except RuntimeError as e:  # torch reports a failed shared-memory allocation as a RuntimeError
        raise CacheUnavailable(f"cannot allocate {_size(header['bytes'])} of shared memory for {what} ({e})") from e
    for i, sample in _samples(dataset, workers, what, show):
        _check(dataset, i, sample, header, what)
        for name, tensor in tensors.items():
            tensor[i] = sample[name]
    return CachedSamples(dataset, header, tensors=tensors)


def _disk_cache(dataset: Dataset, folder: Path, workers: int, accelerator, what: str,
                show: bool) -> tuple[Dataset, str | None]:
    """The split's cache file in `folder`: read if complete and intact, else (re)filled by the local main process
    while the node's other processes wait, then read by them."""
    split, key = cache_key(dataset)
    path = folder / f"{split}-{key}{SUFFIX}"
    filler = accelerator is None or accelerator.is_local_main_process
    header, note, failure = None, None, None
    with accelerator.local_main_process_first() if accelerator is not None else contextlib.nullcontext():
        if not filler:  # the local main process has verified the file, or rewritten it, or failed and said so
            header = _read_header(path, key, len(dataset))
        else:
            opened = _open_verified(path, key, len(dataset), workers)
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
    return CachedSamples(dataset, header, tensors=_map(path, header), path=path), note


def cache_key(dataset: Dataset) -> tuple[str, str]:
    """(split, key): `split` names the dataset (class, scalar settings such as `size` and paths such as `root`,
    the folders of its files), `key` also its files in order with their sizes and modification times."""
    files = [Path(path) for i in range(len(dataset)) for path in dataset.files(i)]
    folders = {folder: str(folder.resolve()) for folder in {path.parent for path in files}}  # any working folder
    split = _split(dataset, folders.values(), FORMAT)
    stats = []
    for path in files:
        try:
            st = os.stat(path)
        except OSError as e:
            raise DlcvkitError(f"cannot read {path}: {e.strerror}; check the file or remove it from the list") from e
        stats.append((folders[path.parent], path.name, st.st_size, st.st_mtime_ns))
    return split, _digest([split, stats])


def _split(dataset: Dataset, folders, file_format: str) -> str:
    """The split part of the name of `dataset`'s cache file in `file_format`."""
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(dataset).items()
                if v is None or isinstance(v, (bool, int, float, str, tuple, Path))}
    return _digest([file_format, type(dataset).__name__, settings, sorted(folders)])


def _earlier_files(dataset: Dataset, folder: Path) -> list[Path]:
    """`dataset`'s cache files in `folder` that earlier dlcvkit versions wrote (in an earlier format)."""
    folders = {str(parent.resolve()) for parent in {Path(path).parent for i in range(len(dataset))
                                                     for path in dataset.files(i)}}
    return [old for file_format in EARLIER_FORMATS
            for old in sorted(folder.glob(f"{_split(dataset, folders, file_format)}-*{SUFFIX}"))]


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, default=str).encode()).hexdigest()[:16]


def _read_header(path: Path, key: str, length: int) -> dict | None:
    """The header of the cache file `path` for `key` if it is whole (its own checksum and size), else None."""
    header = _checked_header(path, key, length)
    return header if isinstance(header, dict) else None


def _checked_header(path: Path, key: str, length: int) -> dict | str | None:
    """The header of the cache file `path` for `key` if it and the file's size are intact; None if there is no
    file; else what is wrong, for the user."""
    try:
        with open(path, "rb") as f:
            line = f.read(ALIGN).split(b"\n")[0]
            size = os.fstat(f.fileno()).st_size
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        return f"cannot be read: {e.strerror}"
    try:
        header = json.loads(line)
        intact = isinstance(header, dict) and header.get("crc") == _header_crc(header)
    except ValueError:  # not JSON, or not UTF-8
        intact = False
    if not intact:
        return "its header does not match its checksum"
    if header.get("format") != FORMAT or header.get("key") != key or header.get("length") != length:
        return "its header is another file's"  # a copy under this name: no longer what its name says
    if size != header["bytes"]:
        return f"it is {size} bytes long, its header says {header['bytes']}"
    return header


def _header_crc(header: dict) -> int:
    """The crc32 of the header's other entries, written in a canonical order."""
    return zlib.crc32(json.dumps({k: v for k, v in header.items() if k != "crc"}, sort_keys=True).encode())


def _open_verified(path: Path, key: str, length: int, workers: int) -> dict | str | None:
    """The header of the cache file `path` for `key` if the file is intact, every sample included; None if there
    is no file; else what is damaged, for the user.

    Verified once, when the run opens the file (about 3 GB/s a thread on a 2-core VM, faults of the mapping
    included: `dlcvkit bench loader`, "cache open"): a damaged file is then rebuilt before any sample of it is used,
    so that the run gives what it gives without the cache. A check per read would cost that on every epoch and
    could only find the damage in the middle of a run, with no intact file to go on with. crc32 rather than a
    cryptographic hash: it finds any burst of flipped bits up to 32 long, at 6.6 GB/s against sha1's 2.0.
    """
    header = _checked_header(path, key, length)
    if not isinstance(header, dict):
        return header
    try:
        with open(path, "rb") as f:
            f.seek(header["checksums"])
            table = f.read(4 * length * len(header["fields"]))
    except OSError as e:
        return f"cannot be read: {e.strerror}"
    if zlib.crc32(table) != header["checksums_crc"]:
        return "its checksum table does not match its checksum"
    expected = np.frombuffer(table, dtype="<u4").reshape(length, len(header["fields"]))
    fields = {name: tensor.numpy() for name, tensor in _map(path, header).items()}
    try:
        actual = _checksums(fields, workers)
    except OSError as e:  # the file is mapped: a read error comes out as such
        return f"cannot be read: {e.strerror}"
    if (bad := np.flatnonzero(actual != expected)).size:
        i, j = divmod(int(bad[0]), len(fields))
        return f"{bad.size} of its sample checksums differ, the first sample {i}'s {list(fields)[j]}"
    return header


def _checksums(fields: dict[str, np.ndarray], workers: int) -> np.ndarray:
    """crc32 of every sample's every field, `n f`, computed by `workers` threads (zlib releases the GIL)."""
    n = len(next(iter(fields.values())))
    blocks = [range(start, min(start + CHUNK, n)) for start in range(0, n, CHUNK)]

    def block(indices: range) -> list[list[int]]:
        return [[zlib.crc32(array[i]) for array in fields.values()] for i in indices]

    with ThreadPoolExecutor(max(1, workers)) as pool:
        rows = [row for rows in pool.map(block, blocks) for row in rows]
    return np.array(rows, dtype=np.uint32).reshape(n, len(fields))


def _map(path: Path, header: dict) -> dict[str, torch.Tensor]:
    """The fields of the cache file as tensors over a private (copy-on-write, never written) mapping."""
    n = header["length"]
    return {name: torch.from_numpy(np.memmap(path, dtype=f["dtype"], mode="c", offset=f["offset"],
                                             shape=(n, *f["shape"])))
            for name, f in header["fields"].items()}


def _rebuild(dataset: Dataset, folder: Path, path: Path, key: str, damage: str | None, workers: int, what: str,
             show: bool) -> tuple[dict, str]:
    """Fill the cache file `path` anew (none, a damaged one: `damage` says what is wrong, or an earlier
    version's); its header and the line for the user."""
    n, earlier = len(dataset), _earlier_files(dataset, folder)
    if damage is not None:  # removed first: its room may be what the new file needs
        with contextlib.suppress(OSError):
            path.unlink()
    try:
        header = _write(dataset, folder, path, key, earlier, workers, what, show)
    except CacheUnavailable as e:
        raise CacheUnavailable(f"{path} was damaged ({damage}); {e}" if damage else str(e)) from e
    if damage is not None:
        return header, f"{what}: {path} was damaged ({damage}): rebuilt, {n} samples decoded once into it"
    if earlier:
        return header, (f"{what}: {earlier[0]} was written by an earlier dlcvkit version (no checksums): replaced, "
                        f"{n} samples decoded once into {path}")
    return header, f"{what}: {n} samples decoded once into {path}"


def _write(dataset: Dataset, folder: Path, path: Path, key: str, earlier: list[Path], workers: int, what: str,
           show: bool) -> dict:
    """Decode every sample into a temporary file in `folder`, then rename it to `path`, and remove the files it
    replaces (the split's for other file lists, and `earlier`: earlier dlcvkit versions'); returns its header."""
    header = _layout(dataset[0], len(dataset)) | {"key": key}
    # the table of crc32s, `n f` little-endian uint32, after the last field
    table = 4 * len(dataset) * len(header["fields"])
    header |= {"checksums": header["bytes"], "bytes": _align(header["bytes"] + table)}
    widest = header | {"checksums_crc": 2**32 - 1, "crc": 2**32 - 1}  # the longest the written line can be
    if len(json.dumps(widest)) + 1 > ALIGN:
        raise CacheUnavailable(f"{what}: samples with {len(header['fields'])} tensors do not fit a cache header")
    split = path.name.split("-")[0]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_dead_fills(folder, split)
        header = _write_file(dataset, folder / f".{path.stem}.{socket.gethostname()}.{os.getpid()}.tmp", path,
                             header, workers, what, show)
    except OSError as e:
        raise CacheUnavailable(f"cannot write the decoded-image cache in {folder} ({e.strerror or e})") from e
    for old in [*folder.glob(f"{split}-*{SUFFIX}"), *earlier]:  # stale now
        if old != path:
            with contextlib.suppress(OSError):  # another user's, say: it only takes room
                old.unlink()
    return header


def _write_file(dataset: Dataset, temp: Path, path: Path, header: dict, workers: int, what: str,
                show: bool) -> dict:
    """Write every sample's tensors, their checksums and then the header line to `temp`, then rename it to `path`
    (removed if not); returns the header as written."""
    checksums = np.zeros((len(dataset), len(header["fields"])), dtype="<u4")
    try:
        with open(temp, "wb") as f:
            _allocate(f, header["bytes"])
            for i, sample in _samples(dataset, workers, what, show):
                _check(dataset, i, sample, header, what)
                for j, (name, field) in enumerate(header["fields"].items()):
                    data = sample[name].numpy().tobytes()  # C order whatever the tensor's strides
                    checksums[i, j] = zlib.crc32(data)
                    f.seek(field["offset"] + i * len(data))
                    f.write(data)
            f.seek(header["checksums"])
            f.write(checksums.tobytes())
            header = header | {"checksums_crc": zlib.crc32(checksums.tobytes())}
            header["crc"] = _header_crc(header)
            f.seek(0)
            f.write(json.dumps(header).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())  # complete on disk before it gets the name that says so
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return header


def _allocate(f, size: int) -> None:
    """Reserve `size` bytes, so that a full disk fails here, before the decoding, and not in the middle."""
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(f.fileno(), 0, size)
    else:
        f.truncate(size)


def _remove_dead_fills(folder: Path, split: str) -> None:
    """Remove temporary files that a killed fill of this split on this host left behind."""
    host = socket.gethostname()
    for temp in folder.glob(f".{split}-*.{host}.*.tmp"):
        pid = temp.name.rsplit(".", 2)[1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            temp.unlink(missing_ok=True)
        except PermissionError:  # alive, another user's
            pass


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"

