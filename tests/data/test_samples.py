"""The per-sample protocol (dlcvkit/data/samples.py): every dataset class, a subset of each, each after `keep`
(what drop_unreadable does) and each behind the cache give the names, labels, ids and files that their samples
hold, item by item."""

import importlib
import pkgutil
import shutil
from pathlib import Path

import pytest
import torch

import dlcvkit.data
from dlcvkit.data.cache import CachedSamples, cache_splits
from dlcvkit.data.folders import UnlabeledFolder
from dlcvkit.data.images import read_image, write_image
from dlcvkit.data.labeled import ImageFolderDataset, P1Folder
from dlcvkit.data.masks import read_mask
from dlcvkit.data.office_home import LabeledCsv
from dlcvkit.data.samples import FileDataset
from dlcvkit.data.satellite import SatellitePairs
from dlcvkit.data.subset import LabelSubset
from dlcvkit.data.synth import synth_cls, synth_officehome, synth_ssl


@pytest.fixture(scope="module")
def data(tmp_path_factory, seg_data) -> Path:
    root = tmp_path_factory.mktemp("samples")
    synth_cls(root / "p1", n=7, size=16, classes=3)
    synth_ssl(root / "mini", n=5, size=16)
    synth_officehome(root / "office", n=24, size=16, classes=4)
    shutil.copytree(seg_data, root / "seg")
    for i in range(6):  # class folders of 1, 2 and 3 images
        write_image(root / "folders" / f"c{i % 3}" / f"{i}.png", torch.full((3, 8, 8), 40 * i, dtype=torch.uint8))
    # an inference CSV: the Office-Home rows without their labels, in another order
    rows = (root / "office" / "val.csv").read_text().splitlines()[1:]
    (root / "test.csv").write_text("id,filename\n" + "".join(f"t{row.split(',')[0]},{row.split(',')[1]}\n"
                                                             for row in reversed(rows)))
    return root


OPENERS = {
    "p1": lambda root: P1Folder(root / "p1"),
    "imagefolder": lambda root: ImageFolderDataset(root / "folders"),
    "csv": lambda root: LabeledCsv(root / "office" / "train.csv", root / "office" / "train"),
    "csv-unlabelled": lambda root: LabeledCsv(root / "test.csv", root / "office" / "val"),
    "unlabelled": lambda root: UnlabeledFolder(root / "mini"),
    "pairs": lambda root: SatellitePairs(root / "seg"),
    "pairs-no-masks": lambda root: SatellitePairs(root / "seg", with_masks=False),
}


def assert_protocol(dataset: FileDataset) -> None:
    """Sample i of `dataset` holds `plain(i)` (names[i], and labels[i], ids[i] where the lists exist) and nothing
    else besides tensors, and its tensors are the decoded `files(i)`."""
    assert len(dataset.names) == len(dataset) > 0
    for values in (dataset.labels, dataset.ids):
        assert values is None or len(values) == len(dataset)
    for i in range(len(dataset)):
        sample = dataset[i]
        plain = {key: value for key, value in sample.items() if not isinstance(value, torch.Tensor)}
        expected = {"name": dataset.names[i]}
        expected |= {"label": dataset.labels[i]} if dataset.labels is not None else {}
        expected |= {"id": dataset.ids[i]} if dataset.ids is not None else {}
        assert plain == expected == dataset.plain(i)
        image, *mask = dataset.files(i)
        assert torch.equal(sample["image"], read_image(image))
        assert ("mask" in sample) == bool(mask)
        if mask:
            assert torch.equal(sample["mask"], read_mask(mask[0]))


def snapshot(dataset: FileDataset, indices) -> list:
    """What the protocol says of the samples `indices`, to compare after they moved."""
    return [(dataset.plain(i), dataset.files(i), dataset.label_source(i)) for i in indices]


@pytest.mark.parametrize("layout", OPENERS)
def test_every_dataset_and_a_subset_of_it_honour_the_protocol(data, layout):
    dataset = OPENERS[layout](data)
    assert_protocol(dataset)
    indices = [len(dataset) - 1, 0, 2]  # out of order: the subset's order, not the dataset's
    subset = LabelSubset(dataset, indices)
    assert_protocol(subset)
    assert snapshot(subset, range(3)) == snapshot(dataset, indices)
    assert (subset.labels is None, subset.ids is None) == (dataset.labels is None, dataset.ids is None)


@pytest.mark.parametrize("layout", OPENERS)
def test_keep_removes_samples_from_every_per_sample_list(data, layout):
    dataset = OPENERS[layout](data)  # drop_unreadable's removal, on the dataset and on a subset of it
    kept = [1, len(dataset) - 1]
    before = snapshot(dataset, kept)
    dataset.keep(kept)
    assert len(dataset) == 2 and snapshot(dataset, range(2)) == before  # label_source: the CSV's lines too
    assert_protocol(dataset)
    subset = LabelSubset(OPENERS[layout](data), [3, 0, 2, 1])
    before = snapshot(subset, [2, 0])
    subset.keep([2, 0])
    assert subset.indices == [2, 3] and snapshot(subset, range(2)) == before
    assert_protocol(subset)


@pytest.mark.parametrize("layout", OPENERS)
@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_a_cached_dataset_and_a_cached_subset_honour_the_protocol(data, tmp_path, layout, mode):
    dataset = OPENERS[layout](data)
    subset = LabelSubset(OPENERS[layout](data), [2, 0, 1])
    cached, notes = cache_splits({"data.train": dataset, "data.val": subset}, mode, tmp_path)
    assert all(isinstance(split, CachedSamples) for split in cached), notes
    for split, source in zip(cached, (dataset, subset)):
        assert_protocol(split)
        assert snapshot(split, range(len(source))) == snapshot(source, range(len(source)))


def test_every_dataset_class_of_the_package_is_tested_above():
    for module in pkgutil.iter_modules(dlcvkit.data.__path__):
        importlib.import_module(f"dlcvkit.data.{module.name}")
    found, seen = set(), [FileDataset]
    while seen:
        for cls in seen.pop().__subclasses__():
            seen.append(cls)
            found |= {cls} if cls.__module__.startswith("dlcvkit.") else set()
    assert found == {P1Folder, ImageFolderDataset, LabeledCsv, UnlabeledFolder, SatellitePairs, LabelSubset,
                     CachedSamples}
