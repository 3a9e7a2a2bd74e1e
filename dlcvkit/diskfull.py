"""A write that fails for lack of room (a full disk, an exhausted quota, the file-size limit of `ulimit -f`) ends
in one line naming the file and the cause, whatever the library that wrote wraps the error in: an OSError with
its errno, safetensors' SafetensorError ("... (os error 28)"), or torch's zip writer, whose RuntimeError
("enforce fail at inline_container.cc ... unexpected pos") has lost the errno altogether."""

from __future__ import annotations

import errno
import os
import re
import resource
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dlcvkit.errors import DlcvkitError

NO_ROOM = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file-size limit (ulimit -f) is reached",
}
LOW_SPACE = 64 * 2**20  # free bytes below which a failed write of torch's is put down to a full disk


class DiskFull(DlcvkitError):
    """`path` could not be written for lack of room, and `why` says which ("the disk is full (...)")."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"cannot write {path}: {why}")
        self.path, self.why = Path(path), why


def no_room(error: BaseException, folder: Path) -> str | None:
    """Why `error`, raised while writing into `folder`, is a lack of room ("the disk is full (No space left on
    device)"), or None when it is another error."""
    code = getattr(error, "errno", None)
    if code not in NO_ROOM:
        text = str(error)
        found = re.search(r"os error (\d+)\)", text)
        code = int(found[1]) if found else next((c for c in NO_ROOM if os.strerror(c) in text), None)
        if code is None and isinstance(error, RuntimeError) and "inline_container" in text:
            code = _torch_write_failure(folder)
    return f"{NO_ROOM[code]} ({os.strerror(code)})" if code in NO_ROOM else None


def _torch_write_failure(folder: Path) -> int | None:
    """The likely errno of a failed write in torch's zip writer, which reports only "unexpected pos": the disk
    is (nearly) full, else a file-size limit is set, else unknown."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    if stat.f_bavail * stat.f_frsize < LOW_SPACE:
        return errno.ENOSPC
    if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
        return errno.EFBIG
    return None


@contextmanager
def writing(path: Path, partial: Path | None = None) -> Iterator[None]:
    """Around the writing of `path`: a lack of room raises DiskFull naming it, after removing `partial` (the
    temporary file or folder being written), so that no half-written file is left on the full disk."""
    try:
        yield
    except DiskFull as e:  # a part of `path` (a file of a checkpoint folder): name the whole
        why = e.why
    except DlcvkitError:
        raise
    except Exception as e:  # noqa: BLE001 - OSError, SafetensorError and torch's RuntimeError all carry it
        why = no_room(e, Path(path).parent)
        if why is None:
            raise
    else:
        return
    if partial is not None:
        remove(partial)
    raise DiskFull(path, why)


def write_atomic(path: Path, text: str, sync: bool = False) -> None:
    """Replace the text file `path` whole (temporary file, then rename; flushed to disk with `sync`): a full disk
    leaves the old file as it was."""
    tmp = path.with_name(f".{path.name}.tmp")
    with writing(path, partial=tmp):
        with open(tmp, "w") as f:
            f.write(text)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)


def append(path: Path, text: str) -> None:
    """Append `text` to `path` whole or not at all: a write cut by a full disk is undone, so that a log of
    records (metrics.jsonl) never ends in half of one."""
    data = text.encode()
    with writing(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except OSError:
                os.ftruncate(fd, end)
                raise
        finally:
            os.close(fd)


def remove(path: Path) -> None:
    """Remove a file or folder if it is there (best effort: this runs on the way out of a failed write)."""
    if Path(path).is_dir() and not Path(path).is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        Path(path).unlink(missing_ok=True)
