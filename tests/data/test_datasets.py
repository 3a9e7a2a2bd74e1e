"""Dataset readers: each course layout read back, layout detection, and one clear error per kind of bad input."""

import pytest
import torch
from torch.utils.data import DataLoader

from dlcvkit.data.folders import UnlabeledFolder
from dlcvkit.data.labeled import ImageFolderDataset, P1Folder, open_labeled
from dlcvkit.data.office_home import LabeledCsv
from dlcvkit.data.satellite import SatellitePairs
from dlcvkit.data.images import write_image
from dlcvkit.data.masks import write_mask
from dlcvkit.errors import DlcvkitError


def image(value, h=8, w=8):
    return torch.full((3, h, w), value, dtype=torch.uint8)


def write_csv(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def office(tmp_path):
    """office/train/ of files named like the real Office-Home (`24_5.jpg`, not the label) + office/train.csv."""
    for k, name in enumerate(["24_5.jpg", "3_1.jpg", "7_0.jpg"]):
        write_image(tmp_path / "office" / "train" / name, image(40 * k))
    write_csv(tmp_path / "office" / "train.csv", "id,filename,label\n0,24_5.jpg,2\n1,3_1.jpg,0\n2,7_0.jpg,1\n")
    return tmp_path / "office"


def expect_error(match, make, *args, **kwargs):
    with pytest.raises(DlcvkitError, match=match) as error:
        make(*args, **kwargs)
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------------------------------------ layouts


def test_p1_folder_labels_from_names_and_resize(tmp_path):
    for label, index in [(0, 0), (0, 1), (2, 0), (0, 10)]:
        write_image(tmp_path / f"{label}_{index}.png", image(label * 50, 16, 16))
    (tmp_path / "notes.txt").write_text("not an image, ignored")
    ds = P1Folder(tmp_path, size=8)
    assert ds.names == ["0_0.png", "0_1.png", "0_10.png", "2_0.png"]
    assert ds.labels == [0, 0, 0, 2] and ds.num_classes == 3
    sample = ds[3]
    assert sample["image"].shape == (3, 8, 8) and sample["image"].dtype == torch.uint8
    assert sample["label"] == 2 and sample["name"] == "2_0.png"
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 8, 8) and batch["label"].tolist() == [0, 0, 0, 2]


def test_labeled_csv_keeps_csv_order_and_ids(office):
    ds = LabeledCsv(office / "train.csv", office / "train", size=4)
    assert ds.names == ["24_5.jpg", "3_1.jpg", "7_0.jpg"] and ds.labels == [2, 0, 1] and ds.num_classes == 3
    assert ds[0]["id"] == "0" and ds[0]["label"] == 2 and ds[0]["image"].shape == (3, 4, 4)
    assert LabeledCsv(office / "train.csv", office / "train", num_classes=65).num_classes == 65


def test_labeled_csv_without_label_column_is_for_inference(office):
    csv = write_csv(office / "test.csv", "id,filename\n5,7_0.jpg\n6,24_5.jpg\n")
    ds = LabeledCsv(csv, office / "train")
    assert ds.labels is None and ds.names == ["7_0.jpg", "24_5.jpg"]
    assert set(ds[1]) == {"image", "name", "id"} and ds[1]["id"] == "6"
    empty_labels = write_csv(office / "test2.csv", "id,filename,label\n0,3_1.jpg,\n1,7_0.jpg,\n")
    assert LabeledCsv(empty_labels, office / "train").labels is None
    half_labelled = write_csv(office / "test3.csv", "id,filename,label\n0,3_1.jpg,4\n1,7_0.jpg,\n")
    expect_error("test3.csv line 3 has label ''", LabeledCsv, half_labelled, office / "train")


def test_unlabeled_folder_takes_every_image_sorted(tmp_path):
    for name in ["b.JPG", "a.png", "c.jpeg"]:
        write_image(tmp_path / name.lower(), image(9))
        (tmp_path / name.lower()).rename(tmp_path / name)
    (tmp_path / "train.csv").write_text("unused")
    write_image(tmp_path / "sub" / "deeper.png", image(1))
    ds = UnlabeledFolder(tmp_path, size=(4, 6))
    assert ds.names == ["a.png", "b.JPG", "c.jpeg"]
    assert set(ds[0]) == {"image", "name"} and ds[0]["image"].shape == (3, 4, 6)


def test_image_folder_classes_are_sorted_subfolders(tmp_path):
    for cls, files in {"dog": ["x.png"], "cat": ["a.png", "b.jpg"]}.items():
        for name in files:
            write_image(tmp_path / cls / name, image(3))
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2
    assert ds.names == ["cat/a.png", "cat/b.jpg", "dog/x.png"] and ds.labels == [0, 0, 1]
    assert ds[2]["label"] == 1 and ds[2]["name"] == "dog/x.png"
    expect_error("2 class folders", ImageFolderDataset, tmp_path, num_classes=3)


def test_satellite_pairs_match_by_stem_and_resize(tmp_path):
    for stem, cls in [("0001", 4), ("0000", 1)]:
        write_image(tmp_path / f"{stem}_sat.jpg", image(10 * cls, 16, 16))
        write_mask(tmp_path / f"{stem}_mask.png", torch.full((16, 16), cls, dtype=torch.uint8))
    ds = SatellitePairs(tmp_path, size=8)
    assert ds.names == ["0000", "0001"]
    sample = ds[1]
    assert sample["name"] == "0001" and sample["mask"].shape == (8, 8) and sample["image"].shape == (3, 8, 8)
    assert sample["mask"].unique().tolist() == [4] and sample["mask"].dtype == torch.uint8
    assert set(SatellitePairs(tmp_path, with_masks=False)[0]) == {"image", "name"}


def test_satellite_pairs_without_masks_needs_only_sat_files(tmp_path):
    write_image(tmp_path / "0003_sat.jpg", image(5))
    assert SatellitePairs(tmp_path, with_masks=False).names == ["0003"]


def test_open_labeled_detects_each_layout(tmp_path, office):
    assert isinstance(open_labeled(office / "train.csv"), LabeledCsv)
    assert isinstance(open_labeled(office / "train", csv=office / "train.csv"), LabeledCsv)
    # Office-Home names look like P1 names: the sibling CSV must win, or the labels would be read from the names
    detected = open_labeled(office / "train")
    assert isinstance(detected, LabeledCsv) and detected.labels == [2, 0, 1]
    write_image(tmp_path / "p1" / "4_0.png", image(1))
    assert isinstance(open_labeled(tmp_path / "p1"), P1Folder)
    write_image(tmp_path / "folders" / "cat" / "a.png", image(1))
    assert isinstance(open_labeled(tmp_path / "folders"), ImageFolderDataset)
    assert isinstance(open_labeled(office / "train", layout="p1"), P1Folder)


# ------------------------------------------------------------------------------------------------ errors


def test_missing_and_empty_folders(tmp_path):
    expect_error("nowhere", P1Folder, tmp_path / "nowhere")
    expect_error("nowhere", SatellitePairs, tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    for reader in (P1Folder, UnlabeledFolder, SatellitePairs, ImageFolderDataset):
        expect_error("empty", reader, tmp_path / "empty")


def test_wrong_layout_names_the_file_or_folder(tmp_path):
    write_image(tmp_path / "mixed" / "3_1.png", image(1))
    write_image(tmp_path / "mixed" / "holiday.png", image(1))
    expect_error("holiday.png", P1Folder, tmp_path / "mixed")
    write_image(tmp_path / "plain" / "photo.jpg", image(1))
    expect_error("plain.*looked for", open_labeled, tmp_path / "plain")
    expect_error("unknown layout 'coco'", open_labeled, tmp_path / "plain", layout="coco")
    write_image(tmp_path / "sat" / "0000_sat.jpg", image(1))
    expect_error("no files named .label._.index..png", P1Folder, tmp_path / "sat")


def test_csv_errors_name_the_csv_column_and_file(office):
    expect_error("missing.csv", LabeledCsv, office / "missing.csv", office / "train")
    no_filename = write_csv(office / "a.csv", "id,file,label\n0,24_5.jpg,1\n")
    expect_error("a.csv has no column 'filename'", LabeledCsv, no_filename, office / "train")
    no_id = write_csv(office / "b.csv", "filename,label\n24_5.jpg,1\n")
    expect_error("b.csv has no column 'id'", LabeledCsv, no_id, office / "train")
    unknown = write_csv(office / "c.csv", "id,filename,label\n0,24_5.jpg,1\n1,ghost.jpg,0\n")
    expect_error("c.csv line 3 names 'ghost.jpg'", LabeledCsv, unknown, office / "train")
    expect_error("c.csv", LabeledCsv, unknown, office / "nowhere")
    out_of_range = write_csv(office / "d.csv", "id,filename,label\n0,24_5.jpg,1\n1,3_1.jpg,65\n")
    expect_error(r"d.csv line 3 \(3_1.jpg\) has label 65, outside 0..64", LabeledCsv, out_of_range,
                 office / "train", None, 65)
    not_int = write_csv(office / "e.csv", "id,filename,label\n0,24_5.jpg,cat\n")
    expect_error("e.csv line 2 has label 'cat'", LabeledCsv, not_int, office / "train")
    negative = write_csv(office / "f.csv", "id,filename,label\n0,24_5.jpg,-1\n")
    expect_error(r"f.csv line 2 \(24_5.jpg\) has label -1", LabeledCsv, negative, office / "train", num_classes=3)
    header_only = write_csv(office / "g.csv", "id,filename,label\n")
    expect_error("g.csv has a header but no rows", LabeledCsv, header_only, office / "train")
    (office / "h.csv").write_bytes(b"\xff\xfe\x00\x01binary")
    expect_error("h.csv", LabeledCsv, office / "h.csv", office / "train")


def test_p1_label_out_of_range_through_open_labeled(tmp_path):
    write_image(tmp_path / "p1" / "50_3.png", image(1))
    expect_error("50_3.png .* label 50, outside 0..49", open_labeled, tmp_path / "p1", num_classes=50)


def test_unpaired_satellite_files(tmp_path):
    write_image(tmp_path / "0000_sat.jpg", image(1))
    write_mask(tmp_path / "0000_mask.png", torch.zeros(8, 8, dtype=torch.uint8))
    write_image(tmp_path / "0001_sat.jpg", image(1))
    expect_error("0001_sat.jpg .* has no 0001_mask.png", SatellitePairs, tmp_path)
    (tmp_path / "0001_sat.jpg").unlink()
    write_mask(tmp_path / "0002_mask.png", torch.zeros(8, 8, dtype=torch.uint8))
    expect_error("0002_mask.png .* has no 0002_sat.jpg", SatellitePairs, tmp_path)


def test_image_mask_size_mismatch_and_red_pixels(tmp_path):
    write_image(tmp_path / "0000_sat.jpg", image(1, 16, 16))
    write_mask(tmp_path / "0000_mask.png", torch.zeros(16, 12, dtype=torch.uint8))
    ds = SatellitePairs(tmp_path)
    expect_error("0000_sat.jpg is 16x16 but 0000_mask.png is 12x16", ds.__getitem__, 0)
    red = torch.zeros(3, 16, 16, dtype=torch.uint8)
    red[0, 2:4, 5] = 255
    write_image(tmp_path / "0000_mask.png", red)
    expect_error("0000_mask.png: 2 red .* row 2, col 5", SatellitePairs(tmp_path).__getitem__, 0)
    assert SatellitePairs(tmp_path, red_as=6)[0]["mask"].unique().tolist() == [6]


def test_corrupt_image_in_a_dataset_names_the_file(tmp_path):
    write_image(tmp_path / "0_0.png", image(1))
    (tmp_path / "1_0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    ds = P1Folder(tmp_path)
    assert ds[0]["label"] == 0
    expect_error("cannot decode image .*1_0.png", ds.__getitem__, 1)
