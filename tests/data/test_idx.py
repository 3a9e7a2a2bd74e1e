"""IDX files (the MNIST family's format) exported into the P1 and CSV layouts, and class-balanced subsets."""

import gzip
import hashlib
import struct
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from dlcvkit.data.labeled import P1Folder
from dlcvkit.data.office_home import LabeledCsv
from dlcvkit.data.idx import read_idx, write_idx
from tests.cli_runner import dlcvkit_here


def _split(rng, n, classes=3, h=5, w=4):
    return rng.integers(0, 256, (n, h, w), dtype=np.uint8), rng.permutation(np.arange(n) % classes).astype(np.uint8)


@pytest.fixture
def idx_folder(tmp_path):
    """Hand-made IDX files: train (12 images, 3 classes) gzip-compressed, t10k (6 images) plain."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "idx"
    folder.mkdir()
    splits = {"train": _split(rng, 12), "t10k": _split(rng, 6)}
    for prefix, (images, labels) in splits.items():
        suffix, compress = (".gz", True) if prefix == "train" else ("", False)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, compress=compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress=compress)
    return folder, splits


def test_idx_header_is_the_documented_byte_layout(tmp_path):
    # 0 0 0x08 (ubyte) 3 (dims), then 2, 2, 3 as big-endian int32, then the values
    raw = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2, 2, 3) + bytes(range(12))
    (tmp_path / "a").write_bytes(raw)
    (tmp_path / "b.gz").write_bytes(gzip.compress(raw))
    expected = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), expected)
    np.testing.assert_array_equal(read_idx(tmp_path / "b.gz"), expected)
    write_idx(tmp_path / "c", expected)
    assert (tmp_path / "c").read_bytes() == raw
    shorts = np.array([[-2, 300]], dtype=np.int16)  # big-endian on disk, native in memory
    write_idx(tmp_path / "d", shorts)
    assert (tmp_path / "d").read_bytes()[-4:] == b"\xff\xfe\x01\x2c"
    np.testing.assert_array_equal(read_idx(tmp_path / "d"), shorts)


def test_export_round_trip_gives_back_every_pixel_and_label(idx_folder, tmp_path, capsys):
    source, splits = idx_folder
    code, out, err = dlcvkit_here(capsys, "data", "export", "idx", "--from", source, "--out", tmp_path / "out")
    assert code in (0, None), err
    for split, prefix in (("train", "train"), ("val", "t10k")):
        images, labels = splits[prefix]
        p1 = P1Folder(tmp_path / "out" / split)
        assert sorted(p1.names) == sorted(f"{labels[i]}_{i}.png" for i in range(len(labels)))
        for name in p1.names:
            i = int(name.split("_")[1].split(".")[0])
            png = Image.open(tmp_path / "out" / split / name)
            assert png.mode == "L"  # grey stays one channel; the readers convert to RGB
            np.testing.assert_array_equal(np.array(png), images[i])
        table = LabeledCsv(tmp_path / "out" / f"{split}.csv", tmp_path / "out" / split)
        assert Counter(zip(table.names, table.labels)) == Counter(zip(p1.names, p1.labels))
        sample = table[0]
        i = int(table.names[0].split("_")[1].split(".")[0])
        assert (sample["image"].numpy() == images[i]).all()  # decoded as RGB: the grey value thrice
        assert sample["label"] == labels[i]


def test_per_class_subset_is_balanced_and_fixed_by_the_seed(idx_folder, tmp_path, capsys):
    source, splits = idx_folder
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        code, _, err = dlcvkit_here(capsys, "data", "export", "idx", "--from", source, "--out", tmp_path / name,
                                    "--per-class", 2, "--seed", seed)
        assert code in (0, None), err
    names = {name: sorted(p.name for p in (tmp_path / name / "train").iterdir()) for name in "abc"}
    assert Counter(n.split("_")[0] for n in names["a"]) == {"0": 2, "1": 2, "2": 2}
    assert names["a"] == names["b"] and names["a"] != names["c"]
    assert len(list((tmp_path / "a" / "val").iterdir())) == 6  # 2 of each class of the 6 t10k images


def _hashes(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case, args, needle", [
    ("missing labels", ["--from", "{src}"], "t10k-labels"),
    ("truncated", ["--from", "{src}"], "truncated"),
    ("both sizes", ["--from", "{src}", "--fraction", "0.5", "--per-class", "1"], "--per-class"),
    ("too many", ["--from", "{src}", "--per-class", "5"], "--per-class 5"),
    ("no package", [], "apt-get install -y dataset-fashion-mnist"),
])
def test_bad_input_is_one_line_and_writes_nothing(idx_folder, tmp_path, capsys, case, args, needle):
    source, _ = idx_folder
    if case == "missing labels":
        (source / "t10k-labels-idx1-ubyte").unlink()
    if case == "truncated":
        path = source / "t10k-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:-1])
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("the user's")
    before = _hashes(tmp_path)
    command = ["data", "export", "fashion-mnist", "--from", tmp_path / "absent"] if case == "no package" else \
        ["data", "export", "idx"]
    code, _, err = dlcvkit_here(capsys, *command, *[a.format(src=source) for a in args], "--out", out,
                                *(["--overwrite"] if case != "no package" else []))
    assert code == 2 and needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert _hashes(tmp_path) == before
