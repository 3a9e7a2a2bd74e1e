"""Synthetic data sets: each layout read back by its reader, seeded bytes, the refusal to overwrite, the CLI."""

import subprocess
import sys

import pytest
import torch

from dlcvkit.data.folders import UnlabeledFolder
from dlcvkit.data.labeled import P1Folder, open_labeled
from dlcvkit.data.office_home import LabeledCsv
from dlcvkit.data.satellite import SatellitePairs
from dlcvkit.data.synth import (
    MAX_OBJECT_CLASSES,
    object_class,
    synth_cls,
    synth_officehome,
    synth_seg,
    synth_ssl,
)
from dlcvkit.errors import DlcvkitError


def files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_object_classes_are_distinct_up_to_70():
    pairs = [object_class(k) for k in range(MAX_OBJECT_CLASSES)]
    assert len(set(pairs)) == MAX_OBJECT_CLASSES == 70
    assert len({shape for shape, _ in pairs[:10]}) == 10 and len({pattern for _, pattern in pairs[:10]}) == 7


def test_cls_is_a_p1_folder(tmp_path):
    summary = synth_cls(tmp_path / "cls", n=30, size=32, classes=10, seed=1)
    ds = P1Folder(tmp_path / "cls")
    assert "30" in summary and str(tmp_path / "cls") in summary
    assert len(ds) == 30 and sorted(set(ds.labels)) == list(range(10)) and ds.num_classes == 10
    assert ds[0]["image"].shape == (3, 32, 32) and open_labeled(tmp_path / "cls").names == ds.names
    # neither the mean colour nor its spread is constant: the images are not blank
    pixels = torch.stack([ds[i]["image"] for i in range(10)]).float()
    assert pixels.std(dim=(1, 2, 3)).min() > 10


def test_ssl_is_a_flat_folder_of_unlabeled_jpgs(tmp_path):
    synth_ssl(tmp_path / "mini", n=12, size=32, classes=10, seed=0)
    ds = UnlabeledFolder(tmp_path / "mini")
    assert ds.names[:2] == ["00000.jpg", "00001.jpg"] and len(ds) == 12
    assert ds[11]["image"].shape == (3, 32, 32) and not list((tmp_path / "mini").glob("*.csv"))


def test_officehome_has_every_class_in_both_splits(tmp_path):
    synth_officehome(tmp_path / "office", n=140, size=32, classes=65, seed=0)
    train = open_labeled(tmp_path / "office" / "train.csv")
    val = LabeledCsv(tmp_path / "office" / "val.csv", tmp_path / "office" / "val", num_classes=65)
    assert len(train) == 75 and len(val) == 65  # at 2-3 images a class, val holds one of each
    assert set(train.labels) == set(val.labels) == set(range(65))
    assert not any(name.startswith(f"{label}_") for name, label in zip(train.names, train.labels))
    assert train.ids[:3] == ["0", "1", "2"] and train[0]["image"].shape == (3, 32, 32)
    header = (tmp_path / "office" / "val.csv").read_text().splitlines()[0]
    assert header == "id,filename,label"
    synth_officehome(tmp_path / "ten", n=50, size=16, classes=10, seed=0)
    assert len(LabeledCsv(tmp_path / "ten" / "val.csv", tmp_path / "ten" / "val")) == 10  # 20%
    with pytest.raises(DlcvkitError, match="--n 10 is too small for 6 classes"):
        synth_officehome(tmp_path / "small", n=10, classes=6)


def test_seg_pairs_hold_all_seven_classes(tmp_path):
    synth_seg(tmp_path / "seg", n=7, size=64, seed=0)
    ds = SatellitePairs(tmp_path / "seg")
    assert ds.names == [f"{i:04d}" for i in range(7)]
    seen = set()
    for i in range(len(ds)):
        sample = ds[i]
        assert sample["image"].shape == (3, 64, 64) and sample["mask"].shape == (64, 64)
        classes = set(sample["mask"].unique().tolist())
        assert i % 7 in classes and len(classes) >= 2
        seen |= classes
    assert seen == set(range(7))


@pytest.mark.parametrize(
    "make, kwargs",
    [
        (synth_cls, dict(n=6, size=32, classes=3)),
        (synth_ssl, dict(n=3, size=32, classes=3)),
        (synth_officehome, dict(n=8, size=32, classes=3)),
        (synth_seg, dict(n=2, size=48)),
    ],
)
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, make, kwargs):
    make(tmp_path / "a", seed=3, **kwargs)
    make(tmp_path / "b", seed=3, **kwargs)
    make(tmp_path / "c", seed=4, **kwargs)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert a == b and len(a) > 0
    images_a = [data for name, data in a.items() if name.endswith((".png", ".jpg"))]
    images_c = [data for name, data in c.items() if name.endswith((".png", ".jpg"))]
    assert not set(images_a) & set(images_c)  # every image changes with the seed


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(DlcvkitError, match="is not empty"):
        synth_cls(tmp_path, n=2, size=32, classes=2)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
    synth_cls(tmp_path, n=2, size=32, classes=2, overwrite=True)
    assert (tmp_path / "keep.txt").read_text() == "mine" and (tmp_path / "1_0.png").is_file()


def dlcvkit(*args):
    return subprocess.run([sys.executable, "-m", "dlcvkit", *args], capture_output=True, text=True, timeout=120)


def test_cli_synth_seg_then_refuses_to_overwrite(tmp_path):
    out = tmp_path / "seg"
    first = dlcvkit("data", "synth", "seg", "--out", str(out), "--n", "3", "--size", "64")
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"000{i}_{k}" for i in range(3) for k in ("mask.png", "sat.jpg")]
    assert str(out) in first.stdout and len(first.stdout.strip().splitlines()) == 1

    again = dlcvkit("data", "synth", "seg", "--out", str(out), "--n", "3", "--size", "64")
    assert again.returncode == 2
    assert "Traceback" not in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert str(out) in again.stderr and "--overwrite" in again.stderr


def test_default_random_palette_writes_the_bytes_it_wrote_before_palettes_existed(tmp_path):
    """Tests pin BYOL's numbers on these images: the `palette` option must leave the default output as it was
    (digest recorded with the code before the option)."""
    import hashlib

    synth_cls(tmp_path / "c", n=3, size=16, classes=3)
    synth_ssl(tmp_path / "s", n=2, size=16)
    digest = hashlib.sha256()
    for p in sorted(tmp_path.rglob("*")):
        if p.is_file():
            digest.update(p.relative_to(tmp_path).as_posix().encode())
            digest.update(p.read_bytes())
    assert digest.hexdigest() == "9bceb305b17c462dbf177c224b322b6eab046c9c3baae47e6fff707bd14096b6"


def test_fixed_palette_draws_grey_objects_where_random_palettes_are_coloured(tmp_path):
    synth_cls(tmp_path / "fixed", n=10, size=32, classes=10, palette="fixed")
    synth_cls(tmp_path / "random", n=10, size=32, classes=10)
    fixed, coloured = P1Folder(tmp_path / "fixed", size=32), P1Folder(tmp_path / "random", size=32)

    def channel_spread(ds):  # per image: the largest difference between its mean R, G and B
        means = [s["image"].float().mean(dim=(1, 2)) for s in ds]
        return [float(m.max() - m.min()) for m in means]

    assert max(channel_spread(fixed)) < 3  # only the per-pixel noise differs between the channels
    assert max(channel_spread(coloured)) > 20


def test_cli_palette_is_refused_for_seg_and_checked_by_name(tmp_path, capsys):
    from tests.cli_runner import dlcvkit_here

    code, _, err = dlcvkit_here(capsys, "data", "synth", "seg", "--out", tmp_path / "seg", "--palette", "fixed")
    assert code == 2 and err.strip() == ("dlcvkit: error: --palette does not apply to seg, whose classes have their own "
                                         "colours; drop it")
    code, _, err = dlcvkit_here(capsys, "data", "synth", "ssl", "--out", tmp_path / "ssl", "--palette", "grey")
    assert code == 2 and err.strip() == "dlcvkit: error: --palette must be one of random, fixed, got 'grey'"
    assert not (tmp_path / "seg").exists() and not (tmp_path / "ssl").exists()
