"""The decoded-image cache's file (`data.cache = "disk"`): its name, layout, checksums, writing and verifying.

One file per split, named by the split and by a key of its file list, sizes and modification times. A header
line (JSON, its own crc32) fills the first page at most; every tensor field follows as one `n ...` array from a
page boundary, then a table of the crc32 of every sample's every field. A file is written under a temporary name
and renamed when complete, so a killed fill is never read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from dlcvkit.data.samples import FileDataset
from dlcvkit.errors import DlcvkitError

FORMAT = "dlcvkit decoded-image cache 2"  # change it with anything that changes the decoded samples or the file
EARLIER_FORMATS = ("dlcvkit decoded-image cache 1",)  # their files, named by their format, are replaced
SUFFIX = ".dlcvcache"
ALIGN = 4096  # the header line fills the first page at most; every array starts on a page boundary
CHUNK = 256  # samples decoded ahead of the writer


class CacheUnavailable(Exception):
    """The cache cannot be made; the message says why, for the one warning line."""


def layout(first: dict, length: int) -> dict:
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


def cache_key(dataset: FileDataset) -> tuple[str, str]:
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


def _split(dataset: FileDataset, folders, file_format: str) -> str:
    """The split part of the name of `dataset`'s cache file in `file_format`."""
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(dataset).items()
                if v is None or isinstance(v, (bool, int, float, str, tuple, Path))}
    return _digest([file_format, type(dataset).__name__, settings, sorted(folders)])


def earlier_files(dataset: FileDataset, folder: Path) -> list[Path]:
    """`dataset`'s cache files in `folder` that earlier dlcvkit versions wrote (in an earlier format)."""
    folders = {str(parent.resolve()) for parent in {Path(path).parent for i in range(len(dataset))
                                                     for path in dataset.files(i)}}
    return [old for file_format in EARLIER_FORMATS
            for old in sorted(folder.glob(f"{_split(dataset, folders, file_format)}-*{SUFFIX}"))]


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, default=str).encode()).hexdigest()[:16]


def read_header(path: Path, key: str, length: int) -> dict | None:
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


def open_verified(path: Path, key: str, length: int, workers: int) -> dict | str | None:
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
    fields = {name: tensor.numpy() for name, tensor in map_file(path, header).items()}
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


def map_file(path: Path, header: dict) -> dict[str, torch.Tensor]:
    """The fields of the cache file as tensors over a private (copy-on-write, never written) mapping."""
    n = header["length"]
    return {name: torch.from_numpy(np.memmap(path, dtype=f["dtype"], mode="c", offset=f["offset"],
                                             shape=(n, *f["shape"])))
            for name, f in header["fields"].items()}


def write(folder: Path, path: Path, header: dict, samples: Iterable[tuple[int, dict]], earlier: list[Path],
           what: str) -> dict:
    """Write `samples` ((i, sample i) for every sample, in any order) into a temporary file in `folder`, then
    rename it to `path`, and remove the files it replaces (the split's for other file lists, and `earlier`: earlier
    dlcvkit versions'); `header` is their `layout` with the file list's "key"; returns the header as written."""
    # the table of crc32s, `n f` little-endian uint32, after the last field
    table = 4 * header["length"] * len(header["fields"])
    header = header | {"checksums": header["bytes"], "bytes": _align(header["bytes"] + table)}
    widest = header | {"checksums_crc": 2**32 - 1, "crc": 2**32 - 1}  # the longest the written line can be
    if len(json.dumps(widest)) + 1 > ALIGN:
        raise CacheUnavailable(f"{what}: samples with {len(header['fields'])} tensors do not fit a cache header")
    split = path.name.split("-")[0]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_dead_fills(folder, split)
        header = _write_file(folder / f".{path.stem}.{socket.gethostname()}.{os.getpid()}.tmp", path, header,
                             samples)
    except OSError as e:
        raise CacheUnavailable(f"cannot write the decoded-image cache in {folder} ({e.strerror or e})") from e
    for old in [*folder.glob(f"{split}-*{SUFFIX}"), *earlier]:  # stale now
        if old != path:
            with contextlib.suppress(OSError):  # another user's, say: it only takes room
                old.unlink()
    return header


def _write_file(temp: Path, path: Path, header: dict, samples: Iterable[tuple[int, dict]]) -> dict:
    """Write every sample's tensors, their checksums and then the header line to `temp`, then rename it to `path`
    (removed if not); returns the header as written."""
    checksums = np.zeros((header["length"], len(header["fields"])), dtype="<u4")
    try:
        with open(temp, "wb") as f:
            _allocate(f, header["bytes"])
            for i, sample in samples:
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
