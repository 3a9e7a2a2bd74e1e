"""`dlcvkit export --format onnx` and `predict cls|seg --onnx`: the exported graph against an independent PyTorch
reference, the same labels and masks as the PyTorch path (at another size than the training one), the metadata
that replaces the run folder, and the files it refuses to touch.

Each model is trained (a few steps) and exported once per module; the export itself (torch.export) is the slow part.
"""

import csv
import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

import dlcvkit.runs.export as export
from dlcvkit.cli import main
from dlcvkit.data.masks import read_mask
from dlcvkit.data.synth import synth_cls, synth_seg
from dlcvkit.runs.load import load_run
from tests.cli_runner import dlcvkit_here

TINY = ["--set", "model.backbone=test_resnet", "--set", "data.batch_size=4", "--set", "data.num_workers=0"]


def _cli(*args) -> None:
    """The CLI in this process (module fixtures cannot use capsys); it must succeed."""
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    assert exited.value.code == 0, args


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    synth_seg(root / "train", n=4, size=64, seed=0)
    synth_seg(root / "test", n=3, size=80, seed=1)  # not the training size: predict resizes to 64 and back
    _cli("segment", "--recipe", "demo_seg", "--data", root / "train", "--out", root / "run", *TINY,
         "--set", "model.fcn_width=16", "--set", "train.epochs=10", "--set", "schedule.warmup_steps=0",
         "--set", "optim.lr=0.01")  # 10 steps: masks of several classes, so that equal masks mean something
    _cli("export", "--run", root / "run", "--out", root / "model.onnx")
    return root


@pytest.fixture(scope="module")
def cls(tmp_path_factory):
    """A grid-pooled head on upsampled inputs (the VGG16 P1 recipe's shape), exported with its EMA weights."""
    root = tmp_path_factory.mktemp("cls")
    synth_cls(root / "train", n=12, size=32, classes=3, seed=0)
    synth_cls(root / "test", n=7, size=32, classes=3, seed=1)
    _cli("classify", "--recipe", "demo_cls", "--data", root / "train", "--out", root / "run", *TINY,
         "--set", "model.pool=grid", "--set", "model.small_images=upsample", "--set", "model.input_size=64",
         "--set", "train.epochs=2", "--set", "train.model_ema=0.5", "--set", "aug.preset=flip")
    _cli("export", "--run", root / "run", "--out", root / "model.onnx", "--weights", "ema")
    return root


def _masks(folder) -> dict[str, np.ndarray]:
    return {p.name: read_mask(p).numpy() for p in sorted(folder.glob("*_mask.png"))}


def _hashes(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("tta", [[], ["--tta"]])
def test_predict_seg_onnx_writes_the_masks_of_the_pytorch_path_at_another_size(seg, capsys, tta):
    torch_dir, onnx_dir = seg / f"torch{len(tta)}", seg / f"onnx{len(tta)}"
    assert dlcvkit_here(capsys, "predict", "seg", "--run", seg / "run", "--images", seg / "test", "--out",
                        torch_dir, "--workers", 0, *tta)[0] == 0
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--onnx", seg / "model.onnx", "--images", seg / "test",
                                "--out", onnx_dir, "--workers", 0, *tta)
    assert code == 0 and err == f"wrote 3 masks to {onnx_dir}\n"
    torch_masks, onnx_masks = _masks(torch_dir), _masks(onnx_dir)
    assert list(onnx_masks) == ["0000_mask.png", "0001_mask.png", "0002_mask.png"]
    for name, mask in torch_masks.items():
        assert mask.shape == (80, 80) and np.array_equal(onnx_masks[name], mask)
    assert len({m.tobytes() for m in onnx_masks.values()}) > 1  # not a constant prediction


def test_the_segmenter_graph_normalises_pixels_and_takes_any_batch_and_size(seg):
    model = onnx.load(seg / "model.onnx")
    assert {p.key: p.value for p in model.metadata_props} | {"input": "", "output": ""} == {
        "task": "segment", "img_size": "64", "classes": "7", "weights": "model.safetensors", "input": "", "output": "",
        "class_names": "Urban,Agriculture,Rangeland,Forest,Water,Barren,Unknown"}
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    pixels = torch.randint(0, 256, (3, 3, 96, 128), generator=torch.Generator().manual_seed(1)).float()
    got = ort.InferenceSession(seg / "model.onnx").run(None, {"pixels": pixels.numpy()})[0]
    _, _, net = load_run(seg / "run")  # independent reference: ImageNet statistics written out here
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD))
    with torch.no_grad():
        expected = net((pixels / 255 - mean) / std).numpy()
    assert got.shape == (3, 7, 96, 128) and np.abs(got - expected).max() < 1e-4


def test_predict_cls_onnx_writes_the_csv_of_the_pytorch_path(cls, capsys):
    meta = {p.key: p.value for p in onnx.load(cls / "model.onnx").metadata_props}
    assert [meta[k] for k in ("task", "img_size", "classes", "weights")] == ["classify", "32", "3", "ema.safetensors"]
    assert dlcvkit_here(capsys, "predict", "cls", "--run", cls / "run", "--weights", "ema", "--images",
                        cls / "test", "--out", cls / "torch.csv", "--workers", 0)[0] == 0
    code, out, _ = dlcvkit_here(capsys, "predict", "cls", "--onnx", cls / "model.onnx", "--images", cls / "test",
                                "--out", cls / "onnx.csv", "--workers", 0, "--batch-size", 3)
    assert code == 0 and out == f"wrote 7 predictions to {cls / 'onnx.csv'}\n"
    rows = list(csv.reader(open(cls / "onnx.csv")))
    assert rows[0] == ["filename", "label"] and len(rows) == 8
    assert (cls / "onnx.csv").read_text() == (cls / "torch.csv").read_text()
    assert len({label for _, label in rows[1:]}) > 1  # not a constant prediction


def test_an_export_that_does_not_reproduce_pytorch_is_not_written(seg, capsys, tmp_path, monkeypatch):
    """A failed check leaves the file that was there (even with --overwrite) and no temporary file."""
    (tmp_path / "model.onnx").write_bytes(b"the user's file")
    before = _hashes(tmp_path)
    monkeypatch.setattr(export, "_to_onnx", lambda net, example, task: onnx.load(seg / "model.onnx"))
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # any difference, even 0, fails
    code, out, err = dlcvkit_here(capsys, "export", "--run", seg / "run", "--out", tmp_path / "model.onnx",
                                  "--overwrite")
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"dlcvkit: error: the ONNX export of {seg / 'run'} does not reproduce PyTorch")
    assert err.endswith(f"{tmp_path / 'model.onnx'} was not written\n")
    assert _hashes(tmp_path) == before


def test_export_replaces_a_file_only_with_overwrite(seg, capsys, tmp_path, monkeypatch):
    (tmp_path / "model.onnx").write_bytes(b"the user's file")
    before = _hashes(tmp_path)
    code, out, err = dlcvkit_here(capsys, "export", "--run", seg / "run", "--out", tmp_path / "model.onnx")
    assert code == 2 and out == "" and "Traceback" not in err
    assert err == (f"dlcvkit: error: --out {tmp_path / 'model.onnx'} already exists; pass --overwrite to replace "
                   "it, or choose another file\n")
    assert _hashes(tmp_path) == before
    monkeypatch.setattr(export, "_to_onnx", lambda net, example, task: onnx.load(seg / "model.onnx"))
    assert dlcvkit_here(capsys, "export", "--run", seg / "run", "--out", tmp_path / "model.onnx", "--overwrite")[0] == 0
    assert list(_hashes(tmp_path)) == ["model.onnx"]
    assert _hashes(tmp_path)["model.onnx"] == hashlib.sha256((seg / "model.onnx").read_bytes()).hexdigest()


@pytest.mark.parametrize("command, model, message", [
    ("seg", "cls", "is a 'classify' model; use `dlcvkit predict cls --onnx`"),
    ("cls", "seg", "is a 'segment' model; use `dlcvkit predict seg --onnx`"),
    ("cls", "garbage", "onnxruntime cannot load it"),
])
def test_predict_onnx_of_the_wrong_model_is_one_line(seg, cls, capsys, tmp_path, command, model, message):
    path = {"seg": seg / "model.onnx", "cls": cls / "model.onnx", "garbage": tmp_path / "x.onnx"}[model]
    (tmp_path / "x.onnx").write_bytes(b"not a model")
    code, out, err = dlcvkit_here(capsys, "predict", command, "--onnx", path, "--images", cls / "test",
                                  "--out", tmp_path / "out")
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith(f"dlcvkit: error: --onnx {path}") and message in err
    assert not (tmp_path / "out").exists()
