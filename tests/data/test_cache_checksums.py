"""A damaged disk cache (bit rot, a byte flipped in its header, checksum table or samples, cut short) is found when
it is opened and rebuilt with one line saying so; the samples and a training run equal those without the cache.
An earlier dlcvkit version's file (no checksums) is replaced."""

import errno
import json
import os

import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from dlcvkit.data import cachefile as cache_module
from dlcvkit.data.cache import cache_splits
from dlcvkit.data.cachefile import SUFFIX, cache_key
from dlcvkit.data.satellite import SatellitePairs
from dlcvkit.data.synth import synth_cls, synth_seg
from tests.cli_runner import dlcvkit_here

RECIPE = """
task = "classify"
[data]
img_size = 16
batch_size = 8
num_workers = 0
[model]
backbone = "test_resnet"
[train]
epochs = 1
[schedule]
warmup_steps = 1
"""

# SatellitePairs of 4 pairs at 32 px, its fields in the sample's order: the header page, the masks (4 x 32 x 32 =
# 4096 bytes), the images (4 x 3 x 32 x 32 = 12288), the checksum table (4 samples x 2 fields x 4 bytes) padded
# to a page
MASKS, IMAGES, TABLE, SIZE = 4096, 4096 + 4096, 4096 + 4096 + 12288, 4096 + 4096 + 12288 + 4096
IMAGE, MASK = 3 * 32 * 32, 32 * 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("checksums")
    synth_seg(root / "seg", 4, 64)
    synth_cls(root / "cls", 16, 16, 4)
    (root / "recipe.toml").write_text(RECIPE)
    return root


def _pairs(data):
    return SatellitePairs(data / "seg", size=32)


def _cached(dataset, folder):
    (out,), notes = cache_splits({"data": dataset}, "disk", folder)
    return out, notes


def _same_as_decoded(cached, dataset) -> bool:
    return all(cached[i].keys() == dataset[i].keys() and all(
        torch.equal(value, cached[i][k]) and value.dtype == cached[i][k].dtype if isinstance(value, torch.Tensor)
        else value == cached[i][k] for k, value in dataset[i].items()) for i in range(len(dataset)))


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x01]))


def _zero_middle_third(path):
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 3)
        f.write(bytes(size // 3))


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(SIZE - 4096)


def _header_digit(path):
    """A digit of the header changed: the line still parses as JSON (the length 4 -> 5)."""
    line = path.read_bytes()[:4096]
    _flip(path, line.index(b'"length": 4') + len(b'"length": '))  # "4" (0x34) -> "5" (0x35)


DAMAGE = {  # how the file is damaged -> what the line says is wrong
    "middle third zeroed": (_zero_middle_third,  # bytes 8192-16383: the images of samples 0-2
                            "3 of its sample checksums differ, the first sample 0's image"),
    "header: first byte": (lambda p: _flip(p, 0), "its header does not match its checksum"),
    "header: a digit": (_header_digit, "its header does not match its checksum"),
    "checksum table": (lambda p: _flip(p, TABLE + 5), "its checksum table does not match its checksum"),
    "pixels: an image": (lambda p: _flip(p, IMAGES + 2 * IMAGE + 100), "1 of its sample checksums differ, "
                                                                         "the first sample 2's image"),
    "pixels: the last mask byte": (lambda p: _flip(p, MASKS + 4 * MASK - 1), "1 of its sample checksums differ, "
                                                                             "the first sample 3's mask"),
    "cut short": (_truncate, f"it is {SIZE - 4096} bytes long, its header says {SIZE}"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_cache_is_rebuilt_with_one_line_and_reads_the_decoded_samples(data, tmp_path, damage):
    dataset = _pairs(data)
    cached, _ = _cached(dataset, tmp_path)
    path = cached.path
    assert path.stat().st_size == SIZE  # the layout the offsets above assume
    damage_file, why = DAMAGE[damage]
    damage_file(path)

    cached, notes = _cached(dataset, tmp_path)
    assert notes == [f"data: {path} was damaged ({why}): rebuilt, 4 samples decoded once into it"]
    assert _same_as_decoded(cached, dataset)
    assert sorted(tmp_path.iterdir()) == [path]  # the rebuilt file only, no temporary one
    cached, notes = _cached(dataset, tmp_path)  # the rebuilt file is intact
    assert notes == [f"data: decoded samples read from {path}"] and _same_as_decoded(cached, dataset)


def test_a_damaged_cache_that_cannot_be_rewritten_is_removed_and_the_data_decoded(data, tmp_path, monkeypatch):
    dataset = _pairs(data)
    path = _cached(dataset, tmp_path)[0].path
    _zero_middle_third(path)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    cached, notes = _cached(dataset, tmp_path)
    assert cached is dataset
    assert notes == [f"warning: {path} was damaged (3 of its sample checksums differ, the first sample 0's image); "
                     f"cannot write the decoded-image cache in {tmp_path} (No space left on device); "
                     "going on without the cache"]
    assert list(tmp_path.iterdir()) == []


def test_a_cache_of_an_earlier_version_without_checksums_is_replaced_with_one_line(data, tmp_path):
    dataset = _pairs(data)
    split, key = cache_key(dataset)
    old_format = "dlcvkit decoded-image cache 1"
    old_split = cache_module._split(dataset, [str((data / "seg").resolve())], old_format)
    assert old_format in cache_module.EARLIER_FORMATS and old_split != split
    header = {"format": old_format, "length": 4, "key": "0" * 16, "bytes": 4096,
              "fields": {"image": {"dtype": "uint8", "shape": [3, 32, 32], "offset": 4096}}}  # as version 1 wrote
    old = tmp_path / f"{old_split}-{'0' * 16}{SUFFIX}"
    old.write_bytes(json.dumps(header).encode() + b"\n")

    cached, notes = _cached(dataset, tmp_path)
    path = tmp_path / f"{split}-{key}{SUFFIX}"
    assert notes == [f"data: {old} was written by an earlier dlcvkit version (no checksums): replaced, "
                     f"4 samples decoded once into {path}"]
    assert sorted(tmp_path.iterdir()) == [path] and _same_as_decoded(cached, dataset)


def _train(capsys, data, out, *args):
    AcceleratorState._reset_state(reset_partial_state=True)
    code, _, err = dlcvkit_here(capsys, "classify", "-r", data / "recipe.toml", "--data", data / "cls", "--out", out,
                                "--max-steps", 2, *args)
    AcceleratorState._reset_state(reset_partial_state=True)
    assert code == 0, err
    return err


def test_a_run_over_a_bit_rotted_cache_trains_as_one_without_the_cache(data, tmp_path, capsys):
    cache = ("--cache", "disk", "--set", f"data.cache_dir={tmp_path / 'cache'}")
    _train(capsys, data, tmp_path / "plain")
    _train(capsys, data, tmp_path / "filled", *cache)
    files = sorted((tmp_path / "cache").glob(f"*{SUFFIX}"))
    assert files
    for path in files:
        _zero_middle_third(path)
    err = _train(capsys, data, tmp_path / "damaged", *cache)
    lines = [line for line in err.splitlines() if "was damaged" in line]
    assert len(lines) == len(files) and all("rebuilt" in line for line in lines)
    plain, damaged = (load_file(tmp_path / run / "model.safetensors") for run in ("plain", "damaged"))
    assert plain.keys() == damaged.keys() and all(torch.equal(plain[k], damaged[k]) for k in plain)
