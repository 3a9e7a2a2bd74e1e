"""The decoded-image cache (data.cache): the same samples bit for bit, reuse and invalidation, atomic fills,
fallback when it cannot be written, resume and 2 processes with the cache on."""

import errno
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from dlcvkit.config import DataConfig
from dlcvkit.data import cache as cache_module
from dlcvkit.data.cache import cache_splits, default_cache_dir
from dlcvkit.data.cachefile import SUFFIX, cache_key
from dlcvkit.data.labeled import P1Folder
from dlcvkit.data.satellite import SatellitePairs
from dlcvkit.data.images import write_image
from dlcvkit.data.synth import render_object, synth_cls, synth_seg
from dlcvkit.engine.loaders import make_eval_loader, make_train_loader
from dlcvkit.engine.sampling import TrainBatches
from dlcvkit.errors import DlcvkitError
from tests.cli_runner import dlcvkit, dlcvkit_here

RECIPE = """
task = "classify"
[data]
img_size = 32
batch_size = 8
num_workers = 1
[model]
backbone = "test_resnet"
[train]
epochs = 2
log_every = 1
[schedule]
warmup_steps = 1
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    synth_cls(root / "cls", 24, 32, 4)
    synth_seg(root / "seg", 4, 64)
    (root / "recipe.toml").write_text(RECIPE)
    return root


@pytest.fixture
def fresh_accelerate():
    """In-process runs each build their Accelerator; accelerate keeps one process-wide state."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def _same_samples(a, b) -> bool:
    """Same keys; tensors equal bit for bit with the same dtype; plain values equal."""
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
        for k in a)


def _cache_files(folder):
    return sorted(folder.glob(f"*{SUFFIX}"))


def _cached(dataset, folder):
    (out,), notes = cache_splits({"data": dataset}, "disk", folder)
    return out, notes


# ------------------------------------------------------------------------------------------ the same samples


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_cached_samples_and_batches_are_the_decoded_ones_bit_for_bit(data, tmp_path, mode):
    dataset = SatellitePairs(data / "seg", size=32)  # image and mask tensors, and the name
    (cached,), notes = cache_splits({"data.train": dataset}, mode, tmp_path)
    assert len(notes) == 1 and "4 samples decoded once" in notes[0]
    assert all(_same_samples(cached[i], dataset[i]) for i in range(len(dataset)))
    assert cached.names == dataset.names and cached.files(1) == dataset.files(1)  # the dataset's attributes
    copy = pickle.loads(pickle.dumps(cached))  # as a spawned worker receives it (disk: maps the file anew)
    assert all(_same_samples(copy[i], dataset[i]) for i in range(len(dataset)))
    # through worker processes: the shared memory or the mapped file reaches them
    loaders = [DataLoader(d, batch_size=3, num_workers=2) for d in (dataset, cached)]
    for plain, from_cache in zip(*loaders, strict=True):
        assert _same_samples(plain, from_cache)


def test_the_engine_reads_a_cache_in_process_and_decodes_in_workers_otherwise(data, tmp_path, fresh_accelerate):
    dataset = SatellitePairs(data / "seg", size=32)
    (cached,), _ = cache_splits({"data": dataset}, "disk", tmp_path)
    sampler = TrainBatches(len(dataset), 3, 0, 1, seed=0)
    config = DataConfig(batch_size=3, num_workers=2)
    accelerator = Accelerator(cpu=True)
    trains = [make_train_loader(d, sampler, 2, torch.device("cpu")) for d in (dataset, cached)]
    evals = [make_eval_loader(d, config, accelerator) for d in (dataset, cached)]
    assert [loader.num_workers for loader in trains + evals] == [2, 0, 2, 0]
    pairs = [*zip(*trains, strict=True), *zip(*evals, strict=True)]  # 4 samples: 1 full training batch, 2 eval
    assert len(pairs) == 3 and all(_same_samples(plain, from_cache) for plain, from_cache in pairs)


# --------------------------------------------------------------------------------------- reuse, invalidation


def test_disk_cache_is_reused_and_rebuilt_when_a_file_changes_comes_or_goes(data, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # the default folder
    folder = tmp_path / "xdg" / "dlcvkit" / "decoded"
    assert default_cache_dir() == folder
    images = tmp_path / "images"
    shutil.copytree(data / "cls", images)

    def check(expected_note):
        dataset = P1Folder(images, size=16)
        (cached,), notes = cache_splits({"data": dataset}, "disk", "")
        assert expected_note in notes[0]
        assert len(_cache_files(folder)) == 1  # a rebuilt split replaces its earlier file
        assert all(_same_samples(cached[i], dataset[i]) for i in range(len(dataset)))
        return _cache_files(folder)[0]

    first = check("24 samples decoded once")
    written = first.stat().st_mtime_ns
    assert check("decoded samples read from") == first and first.stat().st_mtime_ns == written  # a hit: not rewritten

    stat = (images / "0_0.png").stat()
    os.utime(images / "0_0.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched: same bytes
    touched = check("24 samples decoded once")
    assert touched != first

    write_image(images / "1_0.png", render_object(np.random.default_rng(5), 1, 32))  # new bytes
    changed = check("24 samples decoded once")
    assert changed != touched

    shutil.copy(images / "1_0.png", images / "3_9.png")  # an added file
    added = check("25 samples decoded once")
    (images / "2_1.png").unlink()  # a removed file
    removed = check("24 samples decoded once")
    assert len({first, touched, changed, added, removed}) == 5


def test_the_key_depends_on_the_decoding_settings_not_on_labels(data):
    small, large = P1Folder(data / "cls", size=16), P1Folder(data / "cls", size=32)
    assert cache_key(small)[0] != cache_key(large)[0]
    relabelled = P1Folder(data / "cls", size=16)
    relabelled.labels = [0] * len(relabelled)
    assert cache_key(relabelled) == cache_key(small)


# ---------------------------------------------------------------------------------------------- atomic fills


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_cut_short_file_is_not_read_and_leftovers_of_killed_fills_go(data, tmp_path):
    dataset = P1Folder(data / "cls", size=16)
    cached, _ = _cached(dataset, tmp_path)
    path = cached.path
    with open(path, "r+b") as f:  # as if the disk lost the end of it
        f.truncate(path.stat().st_size // 2)
    split, key = cache_key(dataset)
    host = socket.gethostname()
    dead = tmp_path / f".{split}-{key}.{host}.{_dead_pid()}.tmp"  # a fill killed by SIGKILL
    alive = tmp_path / f".{split}-{key}.{host}.1.tmp"  # a fill still running (pid 1 exists)
    dead.write_bytes(b"partial")
    alive.write_bytes(b"partial")

    cached, notes = _cached(dataset, tmp_path)
    assert "24 samples decoded once" in notes[0]
    assert all(_same_samples(cached[i], dataset[i]) for i in range(len(dataset)))
    assert not dead.exists() and alive.exists()


def test_a_bad_image_stops_the_fill_and_leaves_no_file(data, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(data / "cls", images)
    (images / "2_3.png").write_bytes(b"not a png")
    with pytest.raises(DlcvkitError, match="2_3.png"):
        _cached(P1Folder(images, size=16), tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []  # no temporary file, no cache


# --------------------------------------------------------------------------------------------------- fallback


def test_an_unwritable_folder_leaves_the_data_uncached_with_one_warning(data, tmp_path):
    (tmp_path / "a_file").write_text("")
    train, val = P1Folder(data / "cls", size=16), P1Folder(data / "cls", size=32)
    out, notes = cache_splits({"data.train": train, "data.val": val}, "disk", tmp_path / "a_file" / "cache")
    assert out[0] is train and out[1] is val  # the batches are the uncached ones
    assert len(notes) == 1 and notes[0].startswith("warning: cannot write the decoded-image cache in")
    assert str(tmp_path / "a_file" / "cache") in notes[0]


def test_a_full_disk_leaves_the_data_uncached_and_no_file(data, tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    dataset = P1Folder(data / "cls", size=16)
    cached, notes = _cached(dataset, tmp_path)
    assert cached is dataset
    assert notes == [f"warning: cannot write the decoded-image cache in {tmp_path} (No space left on device); "
                     "going on without the cache"]
    assert list(tmp_path.iterdir()) == []


def test_too_little_shared_memory_leaves_the_data_uncached(data, monkeypatch):
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 0))
    dataset = P1Folder(data / "cls", size=16)
    (cached,), notes = cache_splits({"data.train": dataset}, "memory")
    assert cached is dataset
    assert len(notes) == 1 and "of shared memory" in notes[0] and notes[0].startswith("warning:")


def test_a_training_run_with_an_unwritable_cache_succeeds_with_one_warning(data, tmp_path, capsys,
                                                                            fresh_accelerate):
    (tmp_path / "a_file").write_text("")
    code, _, err = dlcvkit_here(capsys, "classify", "-r", data / "recipe.toml", "--data", data / "cls", "--out",
                                tmp_path / "run", "--max-steps", 1, "--cache", "disk",
                                "--set", f"data.cache_dir={tmp_path / 'a_file' / 'cache'}")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "a_file" in warnings[0] and "Traceback" not in err
    assert (tmp_path / "run" / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------- resume, 2 processes


def _train(capsys, data, run_dir, *args):
    AcceleratorState._reset_state(reset_partial_state=True)
    code, _, err = dlcvkit_here(capsys, "classify", *args, *(() if "--resume" in args else
                                ("-r", data / "recipe.toml", "--data", data / "cls", "--out", run_dir)))
    assert code == 0, err
    return err


def test_resume_with_the_cache_equals_resume_without(data, tmp_path, capsys, fresh_accelerate):
    # 24 images / batch 8 = 3 steps per epoch: stop in epoch 1, resume across the epoch boundary
    cache_dir = f"data.cache_dir={tmp_path / 'cache'}"
    _train(capsys, data, tmp_path / "plain", "--max-steps", 2)
    _train(capsys, data, tmp_path / "plain", "--resume", tmp_path / "plain", "--max-steps", 5)
    err = _train(capsys, data, tmp_path / "cached", "--max-steps", 2, "--cache", "memory", "--set", cache_dir)
    assert "samples decoded once into shared memory" in err
    err = _train(capsys, data, tmp_path / "cached", "--resume", tmp_path / "cached", "--max-steps", 5,
                 "--cache", "disk", "--set", cache_dir)  # the cache may change on resume: it changes no result
    assert "24 samples decoded once into" in err
    plain, cached = (load_file(tmp_path / run / "model.safetensors") for run in ("plain", "cached"))
    assert plain.keys() == cached.keys()
    assert all(torch.equal(plain[k], cached[k]) for k in plain)


@pytest.mark.slow
def test_two_processes_share_one_cache_file_and_train_as_one(data, tmp_path, capsys, fresh_accelerate):
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.replace("num_workers = 1", "num_workers = 0") + '[aug]\npreset = "none"\n')
    common = ["classify", "-r", recipe, "--data", data / "cls", "--max-steps", 2]
    dlcvkit("launch", "--procs", 2, "--", *common, "--out", tmp_path / "two", "--cache", "disk",
            "--set", f"data.cache_dir={tmp_path / 'cache'}")
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [SUFFIX]  # one file, no temporary ones
    code, _, err = dlcvkit_here(capsys, *common, "--out", tmp_path / "one")
    assert code == 0, err
    losses = [[r["loss"] for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
               if "loss" in r] for run in ("one", "two")]
    assert len(losses[0]) == 2 and losses[1] == pytest.approx(losses[0], rel=1e-4)


SEG_RECIPE = """
task = "segment"
[data]
img_size = 32
batch_size = 2
num_workers = 0
[model]
name = "fcn8s"
backbone = "test_resnet"
fcn_width = 16
[train]
epochs = 1
"""


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_predict_with_the_cache_writes_what_it_writes_without(data, tmp_path, capsys, monkeypatch,
                                                              fresh_accelerate):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "seg.toml").write_text(SEG_RECIPE)
    _train(capsys, data, tmp_path / "cls", "--max-steps", 1)
    AcceleratorState._reset_state(reset_partial_state=True)
    code, _, err = dlcvkit_here(capsys, "segment", "-r", tmp_path / "seg.toml", "--data", data / "seg", "--out",
                                tmp_path / "seg", "--max-steps", 1, "--set", f"data.cache_dir={tmp_path / 'cache'}")
    assert code == 0, err
    for task, images, out in (("cls", data / "cls", "out.csv"), ("seg", data / "seg", "masks")):
        notes = []
        for name, extra in (("plain", ()), ("filled", ("--cache", "disk")), ("read", ("--cache", "disk"))):
            AcceleratorState._reset_state(reset_partial_state=True)
            code, _, err = dlcvkit_here(capsys, "predict", task, "--run", tmp_path / task, "--images", images,
                                        "--out", tmp_path / name / out, "--weights", "last", *extra)
            assert code == 0, err
            notes.append(err)
        assert "decoded once into" in notes[1] and "decoded samples read from" in notes[2]
        results = [tmp_path / name / out for name in ("plain", "filled", "read")]
        if task == "cls":
            assert results[0].read_text() == results[1].read_text() == results[2].read_text()
        else:
            assert _files(results[0]) == _files(results[1]) == _files(results[2]) and len(_files(results[0])) == 4
    assert len(_cache_files(tmp_path / "xdg" / "dlcvkit" / "decoded")) == 1  # the cls run's default folder
    assert len(_cache_files(tmp_path / "cache")) == 1  # the seg run's data.cache_dir
