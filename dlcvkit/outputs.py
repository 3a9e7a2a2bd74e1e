"""Where the commands that are not training runs write (predictions, JSON, pictures, data sets): every output
is checked before any work, so that no user file is overwritten unless `--overwrite` asks for it, and no input
is overwritten at all. Training run folders follow their own rules, in `dlcvkit.engine.rundir`."""

from __future__ import annotations

import os
from pathlib import Path

from dlcvkit.errors import DlcvkitError

Inputs = dict[str, Path | None]  # option -> the path it was given (None: not given)


def check_output_file(path: Path, option: str, overwrite: bool, inputs: Inputs | None = None) -> Path:
    """Refuse the output file `path` (given as `option`) when it is one of the command's `inputs` (always), a
    folder, or an existing file without `overwrite`. Writes nothing."""
    path = check_writable_path(path, option)
    _check_not_input(path, option, inputs, "file")
    if path.is_dir():
        raise DlcvkitError(f"{option} {path} is a folder; give the name of the file to write")
    if path.exists() and not overwrite:
        raise DlcvkitError(f"{option} {path} already exists; pass --overwrite to replace it, or choose another file")
    return path


def check_output_dir(path: Path, option: str, overwrite: bool, inputs: Inputs | None = None) -> Path:
    """Refuse the output folder `path` when it is one of the command's input folders (always), a file, or a
    non-empty folder without `overwrite` (with it, the files of the names the command writes are replaced and
    other files stay). Writes nothing: in a multi-process run every process checks before any of them writes."""
    path = check_writable_path(path, option)
    _check_not_input(path, option, inputs, "folder")
    if path.exists() and not path.is_dir():
        raise DlcvkitError(f"{option} {path} is a file; give a folder")
    if path.is_dir() and not overwrite and any(path.iterdir()):
        raise DlcvkitError(
            f"{option} {path} is not empty; choose a new or empty folder, or pass --overwrite to replace the files "
            "of the names this command writes (other files stay)"
        )
    return path


def check_writable_path(path: Path, option: str) -> Path:
    """Refuse an output path that no write could go through: a symbolic link loop, a symbolic link to nothing
    (the write would land wherever it points), or a path through a file. Writes nothing."""
    path = Path(path)
    try:
        path.resolve(strict=False)
    except (RuntimeError, OSError):  # RuntimeError("Symlink loop from ...") before Python 3.13, OSError(ELOOP) since
        raise DlcvkitError(f"{option} {path} is a symbolic link loop; give a real path") from None
    for link in (path, *path.parents):
        if link.is_symlink() and not link.exists():
            raise DlcvkitError(f"{option} {path}: {link} is a symbolic link to {os.readlink(link)}, which does not "
                               "exist; give the path itself")
    existing = next((p for p in path.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise DlcvkitError(f"{option} {path}: {existing} is a file, not a folder; give another path")
    return path


def prepare_output_dir(path: Path, option: str, overwrite: bool, inputs: Inputs | None = None) -> Path:
    """`check_output_dir`, then create the folder (for single-process commands)."""
    check_output_dir(path, option, overwrite, inputs).mkdir(parents=True, exist_ok=True)
    return Path(path)


def _check_not_input(path: Path, option: str, inputs: Inputs | None, kind: str) -> None:
    """An input, or a file already inside an input folder (a ground-truth mask, an image), is never an output."""
    for other, given in (inputs or {}).items():
        if given is None:
            continue
        inside = kind == "file" and path.exists() and Path(given).is_dir() and _within(path, Path(given))
        if inside or _same_path(path, Path(given)):
            where = "a file of the input folder" if inside else "also the input"
            raise DlcvkitError(
                f"{option} {path} is {where} {other} {given}; write to another {kind} (an input is never "
                "overwritten, not even with --overwrite)"
            )


def _within(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _same_path(a: Path, b: Path) -> bool:
    """Whether two paths name the same file or folder (through symbolic links, `..` or hard links)."""
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()
