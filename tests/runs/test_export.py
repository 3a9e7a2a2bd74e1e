"""`dlcvkit export --format onnx` and `predict cls|seg --onnx`: the exported graph against an independent PyTorch
reference, the same labels and masks as the PyTorch path (at another size than the training one), the metadata
that replaces the run folder, and the files it refuses to touch; damaged copies of the exports (the checksum
beside them, inf/nan weights and logits, truncated or foreign files) and hand-made graphs that do not fit, each
refused in one line before any output.

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
from dlcvkit.tasks.segment import TTA_NOTE
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
    predict_both_ways(capsys, seg / "run", seg / "model.onnx", seg / "test", seg / f"pred{len(tta)}", tta)


def predict_both_ways(capsys, run, model, images, folder, options, run_options=()) -> None:
    """`predict seg` of the 80x80 images 0000..0002 with the run (and `run_options`) into `folder`/torch and with
    its ONNX export `model` into `folder`/onnx: the same masks, not all alike."""
    torch_dir, onnx_dir = folder / "torch", folder / "onnx"
    assert dlcvkit_here(capsys, "predict", "seg", "--run", run, "--images", images, "--out", torch_dir,
                        "--workers", 0, *run_options, *options)[0] == 0
    code, _, err = dlcvkit_here(capsys, "predict", "seg", "--onnx", model, "--images", images, "--out", onnx_dir,
                                "--workers", 0, *options)
    # --tta runs the ONNX session on the 4 views, as the PyTorch path runs the model, and says so
    assert code == 0 and err == f"wrote 3 masks to {onnx_dir}" + (f" ({TTA_NOTE})" if "--tta" in options else "") + "\n"
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
    assert list(_hashes(tmp_path)) == ["model.onnx", "model.onnx.sha256"]
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


# ------------------------------------------------------------------- damaged models: refused before any output


def _weight_offset(model_file, name: str) -> int:
    """Where the bytes of the initializer `name` start in `model_file`."""
    data = model_file.read_bytes()
    tensor = next(t for t in onnx.load(model_file).graph.initializer if t.name == name)
    assert data.count(tensor.raw_data) == 1
    return data.index(tensor.raw_data)


def _damaged_copy(model_file, folder, damage: str):
    """A copy of an export and its checksum file in `folder`, with `damage` done to one of them."""
    copy, sums = folder / model_file.name, folder / (model_file.name + ".sha256")
    data = bytearray(model_file.read_bytes())
    sums.write_bytes((model_file.parent / sums.name).read_bytes())
    weight = _weight_offset(model_file, "model.encoder.layer4.0.conv1.weight") + 1000
    kind, _, checksum = damage.partition(", ")
    if kind == "nan":  # 64 bytes of 0xff: 16 float32 NaNs
        data[weight:weight + 64] = b"\xff" * 64
    elif kind == "finite":  # the lowest mantissa bit of one weight: still finite, a little off
        data[weight] ^= 1
    elif kind == "truncated":
        data = data[:len(data) // 2]
    elif kind == "not onnx":
        data = bytearray(b"<html>404 Not Found</html>\n")
    elif kind == "checksum digit":
        text = sums.read_text()
        sums.write_text(("0" if text[0] != "0" else "1") + text[1:])
    elif kind == "checksum garbage":
        sums.write_bytes(b"\xff\xfe garbage\n")
    copy.write_bytes(bytes(data))
    if "no checksum" in (kind, checksum):
        sums.unlink()
    return copy


MISMATCH = "does not match its checksum in {sums}: one of them was damaged or changed after the export; " \
           "export the model again with `dlcvkit export`"


@pytest.mark.parametrize("damage, message", [
    ("nan", MISMATCH),
    ("nan, no checksum", "holds inf/nan weights (first in 'model.encoder.layer4.0.conv1.weight'): the file is "
                         "damaged; export the model again with `dlcvkit export`"),
    ("finite", MISMATCH),
    ("truncated", MISMATCH),
    ("truncated, no checksum", "onnxruntime cannot load it"),
    ("not onnx, no checksum", "onnxruntime cannot load it"),
    ("checksum digit", MISMATCH),
    ("checksum garbage", ": its checksum file {sums} is damaged (no sha256 in it); export the model again with "
                         "`dlcvkit export`"),
])
def test_predict_seg_refuses_a_damaged_model_before_writing(seg, capsys, tmp_path, damage, message):
    model = _damaged_copy(seg / "model.onnx", tmp_path, damage)
    before = _hashes(tmp_path)
    code, out, err = dlcvkit_here(capsys, "predict", "seg", "--onnx", model, "--data", seg / "test", "--out",
                                  tmp_path / "out", "--workers", 0)
    assert code == 2 and out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"dlcvkit: error: --onnx {model}")
    assert message.format(sums=tmp_path / "model.onnx.sha256") in err
    assert _hashes(tmp_path) == before  # no --out folder, nothing changed


def test_export_writes_the_sha256_of_the_model_beside_it_in_sha256sum_format(seg, cls):
    for root in (seg, cls):
        digest = hashlib.sha256((root / "model.onnx").read_bytes()).hexdigest()
        assert (root / "model.onnx.sha256").read_text() == f"{digest}  model.onnx\n"


def test_a_model_without_checksum_runs_after_the_checks_with_one_note(seg, capsys, tmp_path):
    """An export by hand or by an earlier dlcvkit: the same masks as the verified model, and a note saying so."""
    model = _damaged_copy(seg / "model.onnx", tmp_path, "no checksum")
    assert dlcvkit_here(capsys, "predict", "seg", "--onnx", seg / "model.onnx", "--data", seg / "test", "--out",
                        tmp_path / "verified", "--workers", 0) == (0, "", f"wrote 3 masks to {tmp_path / 'verified'}\n")
    code, out, err = dlcvkit_here(capsys, "predict", "seg", "--onnx", model, "--data", seg / "test", "--out",
                                  tmp_path / "unverified", "--workers", 0)
    assert code == 0 and out == ""
    assert err == (f"dlcvkit: note: --onnx {model} has no checksum file {model}.sha256 (exported by hand or by an "
                   "earlier dlcvkit): its bytes are not verified, only its weights checked to be finite\n"
                   f"wrote 3 masks to {tmp_path / 'unverified'}\n")
    verified, unverified = _masks(tmp_path / "verified"), _masks(tmp_path / "unverified")
    assert list(unverified) == list(verified) and all(np.array_equal(unverified[k], verified[k]) for k in verified)


def _overflowing_copy(model_file, folder, weight: str):
    """A copy of an export whose weight `weight` is all 3e38: finite, and checksummed, but its logits overflow."""
    model = onnx.load(model_file)
    tensor = next(t for t in model.graph.initializer if t.name == weight)
    tensor.raw_data = np.full(onnx.numpy_helper.to_array(tensor).shape, 3e38, np.float32).tobytes()
    data = model.SerializeToString()
    (folder / "model.onnx").write_bytes(data)
    (folder / "model.onnx.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  model.onnx\n")
    return folder / "model.onnx"


def test_inf_nan_logits_of_finite_weights_write_no_mask(seg, capsys, tmp_path):
    model = _overflowing_copy(seg / "model.onnx", tmp_path, "model.encoder.conv1.0.weight")
    code, out, err = dlcvkit_here(capsys, "predict", "seg", "--onnx", model, "--data", seg / "test", "--out",
                                  tmp_path / "out", "--workers", 0)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err == (f"dlcvkit: error: --onnx {model} gives inf/nan logits on pixels 1x3x64x64: the model is damaged; "
                   "export it again with `dlcvkit export`\n")
    assert list((tmp_path / "out").iterdir()) == []


def test_predict_cls_refuses_inf_nan_logits_and_damaged_models_without_writing_the_csv(cls, capsys, tmp_path):
    first = onnx.load(cls / "model.onnx").graph.initializer[0].name
    overflowing = _overflowing_copy(cls / "model.onnx", tmp_path, first)
    code, _, err = dlcvkit_here(capsys, "predict", "cls", "--onnx", overflowing, "--data", cls / "test", "--out",
                                tmp_path / "labels.csv", "--workers", 0, "--batch-size", 3)
    assert code == 2 and err == (f"dlcvkit: error: --onnx {overflowing} gives inf/nan logits on pixels 3x3x32x32: "
                                 "the model is damaged; export it again with `dlcvkit export`\n")
    data = bytearray(overflowing.read_bytes())
    data[len(data) // 2] ^= 1  # one damaged bit: refused by the checksum before anything runs
    overflowing.write_bytes(bytes(data))
    code, _, err = dlcvkit_here(capsys, "predict", "cls", "--onnx", overflowing, "--data", cls / "test", "--out",
                                tmp_path / "labels.csv", "--workers", 0)
    assert code == 2 and err == (f"dlcvkit: error: --onnx {overflowing} " + MISMATCH + "\n").format(
        sums=tmp_path / "model.onnx.sha256")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.sha256"]


def _hand_made(path, channels: int = 3, size: int | str = "h", out_classes: int = 7, metadata: bool = True):
    """A segmenter written by hand (a 1x1 convolution), with `channels` input channels of a `size` side."""
    from onnx import TensorProto, helper
    weight = helper.make_tensor("w", TensorProto.FLOAT, [out_classes, channels, 1, 1], [0.01] * out_classes * channels)
    side = size if isinstance(size, int) else "w"
    graph = helper.make_graph(
        [helper.make_node("Conv", ["pixels", "w"], ["logits"])], "hand",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["b", channels, size, side])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", out_classes, size, side])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, {"task": "segment", "img_size": "64", "classes": "7"})
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("kind, message", [
    ("1 channel", "does not fit: it takes 'pixels' tensor(float) ['b', 1, 'h', 'w'] and gives ['logits'], not "
                  "float pixels 'pixels' b x 3 x 64 x 64 to 'logits'; give a file written by `dlcvkit export`"),
    ("32 px", "does not fit: it takes 'pixels' tensor(float) ['b', 3, 32, 32]"),
    ("5 classes", "gives logits 1x5x64x64 on pixels 1x3x64x64, not 1x7x64x64; give a file written by `dlcvkit export`"),
    ("no metadata", "has no dlcvkit metadata (task, img_size, classes); export it with `dlcvkit export`"),
])
def test_a_model_that_does_not_fit_is_one_line(seg, capsys, tmp_path, kind, message):
    model = _hand_made(tmp_path / "model.onnx", channels=1 if kind == "1 channel" else 3,
                       size=32 if kind == "32 px" else "h", out_classes=5 if kind == "5 classes" else 7,
                       metadata=kind != "no metadata")
    code, out, err = dlcvkit_here(capsys, "predict", "seg", "--onnx", model, "--data", seg / "test", "--out",
                                  tmp_path / "out", "--workers", 0)
    assert code == 2 and out == "" and "Traceback" not in err
    # refused on loading, or (5 classes) on the first batch, after the note that the model has no checksum
    assert err.count("\n") == (2 if kind == "5 classes" else 1)
    assert err.splitlines()[-1].startswith(f"dlcvkit: error: --onnx {model}") and message in err
    assert not list(tmp_path.glob("out/*"))
