"""Samples whose files do not decode: left out (`data.skip_bad`, `--skip-bad`), and said so in one line."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dlcvkit.data.geotiff import read_pixels
from dlcvkit.data.samples import FileDataset
from dlcvkit.errors import DlcvkitError


def drop_unreadable(dataset: FileDataset, what: str, workers: int = 0) -> list[Path]:
    """Decode every file of every sample of `dataset` (its `files(i)`) once and remove, in place, the samples
    with a file that does not decode; returns those files (an error if no sample is left: `what` names the
    option or folder). Behind `data.skip_bad` and `--skip-bad`: a few broken files in a large set need not stop
    a run, and every process of a run drops the same samples."""

    def unreadable(i: int) -> Path | None:
        for path in dataset.files(i):
            try:
                read_pixels(path)
            except DlcvkitError:
                return path
        return None

    with ThreadPoolExecutor(max(1, workers)) as pool:  # the decoders release the GIL
        bad = list(pool.map(unreadable, range(len(dataset))))
    kept = [i for i, path in enumerate(bad) if path is None]
    if not kept:
        raise DlcvkitError(f"{what}: no sample decodes (the first file: {bad[0]}); check the folder")
    if len(kept) < len(bad):
        dataset.keep(kept)
    return [path for path in bad if path is not None]


def skip_unreadable(dataset: FileDataset, what: str, workers: int = 0) -> str:
    """`drop_unreadable`, reported: a one-line note on what was left out of `what` (an option or a folder)."""
    total = len(dataset)
    return f"{what}: {describe_skipped(drop_unreadable(dataset, what, workers), total)}"


def incomplete_output(skipped: list[Path], total: int, rest: str) -> DlcvkitError:
    """The error that ends a `--skip-bad` prediction which left images out: its output is incomplete, so the
    command must not report success; `rest` says where the other outputs are."""
    return DlcvkitError(f"{describe_skipped(skipped, total, 'images')}; the other {total - len(skipped)} {rest}")


def describe_skipped(skipped: list[Path], total: int, noun: str = "samples") -> str:
    """'skipped 2 of 5 samples that cannot be decoded: A, B' (the first three named), or 'all 5 samples decode'."""
    if not skipped:
        return f"all {total} {noun} decode"
    shown = ", ".join(map(str, skipped[:3])) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
    return f"skipped {len(skipped)} of {total} {noun} that cannot be decoded: {shown}"
