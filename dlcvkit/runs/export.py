"""ONNX export of a finished classifier or segmenter (`dlcvkit export`), checked against PyTorch with onnxruntime
before it is written; and the exported model run by onnxruntime in place of the PyTorch one (`predict --onnx`).

The graph takes what a server has: float32 RGB pixels `b 3 h w` in 0..255 (uint8 range). It normalises them as
the model was trained (ImageNet mean and std) and returns the logits, `b classes` for a classifier (any batch,
`img_size` x `img_size` images) or `b classes h w` for a segmenter (any batch, height and width that are
multiples of 32). `dlcvkit predict seg` resizes each image to `img_size` (bilinear, antialiased) before the
network and the class probabilities back to the image's size after it; a server does the same to get the same
masks. The metadata (`task`, `img_size`, `classes`, ...) is all that `predict --onnx` needs: no run folder.
Beside the model goes its sha256 (`model.onnx.sha256`), which `predict --onnx` verifies (`dlcvkit.runs.onnx_file`).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import nn

from dlcvkit.augment.common import normalize
from dlcvkit.config import Recipe, TrainConfig
from dlcvkit.data.masks import CLASS_NAMES, NUM_CLASSES
from dlcvkit.diskfull import writing
from dlcvkit.engine.distributed import is_launch_main_process
from dlcvkit.errors import DlcvkitError, first_line
from dlcvkit.models.classifier import Classifier
from dlcvkit.outputs import check_output_file
from dlcvkit.runs.load import CLASSIFIERS, check_run_kind, load_run, run_weights, wrong_kind
from dlcvkit.runs.onnx_file import check_finite_weights, checksum_file, verify_checksum, write_checksum
from dlcvkit.tasks.registry import task_classes

INPUT, OUTPUT = "pixels", "logits"
TOLERANCE = 1e-3  # the largest |onnxruntime - PyTorch| accepted on fp32 logits
TASKS = ("classify", "segment")
EXPORTED = (*CLASSIFIERS, "segment")  # the tasks whose runs export: classifiers and segmenters
EXTRA = "pip install 'dlcvkit[onnx]'"


class PixelInput(nn.Module):
    """A model behind the normalisation of its training inputs: float pixels in 0..255 in, its logits out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(normalize(pixels / 255))


def export_onnx(run_dir: Path, out: Path, weights: str = "best", overwrite: bool = False):
    """Write the run's model to `out` as ONNX once onnxruntime reproduces PyTorch on sample inputs (within
    TOLERANCE); returns (metadata, the sample inputs' shapes, the largest absolute difference)."""
    onnx = _require("onnx")
    out = Path(out)
    if out.is_dir():
        raise DlcvkitError(f"--out {out} is a folder; give the file to write, e.g. {out / 'model.onnx'}")
    check_output_file(out, "--out", overwrite, {"--run": run_dir})
    check_run_kind(run_dir, EXPORTED)
    check_output_file(checksum_file(out), "--out", overwrite, {"--run": run_dir})
    recipe, model, weights_file = load_model(Path(run_dir), weights)
    if getattr(recipe.data, "band_mean", None):  # the graph's input is RGB pixels normalised by ImageNet's stats
        raise DlcvkitError(f"--run {run_dir} was trained on {recipe.data.bands}-band rasters with their own band "
                           "statistics; `export` writes RGB models only: predict with --run RUN_DIR")
    task, classes = _kind(recipe, model, run_dir)
    net = PixelInput(model).eval()
    inputs = sample_inputs(task, recipe.data.img_size)
    proto = _to_onnx(net, inputs[0], task)
    metadata = {
        "task": task,
        "img_size": str(recipe.data.img_size),
        "classes": str(classes),
        "input": f"{INPUT}: float32 RGB b x 3 x h x w in 0..255, normalised inside (ImageNet mean and std)",
        "output": f"{OUTPUT}: " + ("b x classes" if task == "classify" else
                                   "b x classes x h x w (resize images to img_size first, probabilities back)"),
        "weights": weights_file.name,
    } | ({"class_names": ",".join(CLASS_NAMES)} if task == "segment" else {})
    onnx.helper.set_model_props(proto, metadata)
    data = proto.SerializeToString()
    difference = max_difference(data, net, inputs)
    if not difference <= TOLERANCE:  # also catches NaN
        raise DlcvkitError(
            f"the ONNX export of {run_dir} does not reproduce PyTorch: outputs differ by up to {difference:.3g} "
            f"(> {TOLERANCE}); {out} was not written"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_checksum(out, data)  # first: a crash before the model is replaced leaves a checksum refusing the old one
    tmp = out.with_name(f".{out.name}.tmp")
    with writing(out, partial=tmp):
        tmp.write_bytes(data)
        os.replace(tmp, out)  # a reader never sees half a model
    return metadata, [tuple(x.shape) for x in inputs], difference


def load_model(run_dir: Path, weights: str) -> tuple[Recipe, nn.Module, Path]:
    """(recipe, model in eval mode on the CPU, weights file) of a finished run with its best, last or EMA weights."""
    recipe, _, model = load_run(run_dir, weights)
    return recipe, model, run_weights(run_dir, weights)


def _kind(recipe: Recipe, model: nn.Module, run_dir: Path) -> tuple[str, int]:
    """("classify" or "segment", number of classes) of a run's model."""
    if isinstance(model, Classifier):
        return "classify", model.head[-1].out_features
    if recipe.task == "segment":
        return "segment", NUM_CLASSES
    raise wrong_kind(run_dir, recipe.task, EXPORTED)


def sample_inputs(task: str, img_size: int) -> list[torch.Tensor]:
    """Seeded random pixel batches the export is checked on: two batch sizes and, for a segmenter, another
    height and width, so that every dynamic axis of the graph is exercised."""
    generator = torch.Generator().manual_seed(0)
    other = (3, 3, img_size, img_size) if task == "classify" else (1, 3, img_size + 32, img_size + 64)
    return [torch.randint(0, 256, shape, generator=generator).float() for shape in ((2, 3, img_size, img_size), other)]


def _to_onnx(net: nn.Module, example: torch.Tensor, task: str):
    """The ONNX ModelProto of `net`, by torch.export (`dynamo=True`, which needs onnxscript). The deprecated
    TorchScript exporter (`dynamo=False`) needs no onnxscript and takes a second instead of 10-40 s, but cannot
    express the adaptive pooling of a grid head (VGG16's 25088 -> classes, the reference P1 system)."""
    _require("onnxscript")
    axes = {0: "batch"} if task == "classify" else {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        program = torch.onnx.export(net, (example,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                    dynamic_shapes=(axes,), verbose=False)
    return program.model_proto


def max_difference(data: bytes, net: nn.Module, inputs: list[torch.Tensor]) -> float:
    """The largest |onnxruntime - PyTorch| over the outputs of `inputs` (a shape mismatch is an error)."""
    session = _require("onnxruntime").InferenceSession(data, providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            expected = net(x).numpy()
        got = session.run([OUTPUT], {INPUT: x.numpy()})[0]
        if got.shape != expected.shape:
            raise DlcvkitError(f"the ONNX export gives {got.shape} for {tuple(x.shape)}; PyTorch {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


# ------------------------------------------------------------------------------ the export in place of a run


class OnnxModel:
    """An exported model of `task` run by onnxruntime on the CPU, called like the PyTorch model it came from
    (normalised float `b 3 h w` in, logits out on the input's device), so the inference code runs it unchanged.

    Refused before it runs: a file that does not match the checksum `dlcvkit export` wrote beside it, inf/nan
    weights, metadata of another task, an input that is not float `b 3 h w` pixels at the metadata's img_size;
    and when it runs, logits of another shape or inf/nan (no output is written from them). A file with no
    checksum beside it (exported by hand or by an earlier dlcvkit) runs after the other checks: `verified` is
    False."""

    def __init__(self, path: Path, task: str) -> None:
        ort, onnx = _require("onnxruntime"), _require("onnx")
        if not path.is_file():
            raise DlcvkitError(f"--onnx {path} does not exist")
        self.path, self.task = path, task
        data = path.read_bytes()
        self.verified = verify_checksum(path, data)
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            proto = onnx.load_model_from_string(data)
        except Exception as e:  # noqa: BLE001 - onnxruntime's own exception types for unreadable models
            raise DlcvkitError(
                f"--onnx {path}: onnxruntime cannot load it ({first_line(e)}); it is damaged, truncated or not an "
                "ONNX model: give a file written by `dlcvkit export`"
            ) from None
        check_finite_weights(path, proto)
        self.metadata = self.session.get_modelmeta().custom_metadata_map
        self.img_size, self.classes = self._check_metadata()
        self._check_input()
        self._mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, -1, 1, 1)
        self._std = torch.tensor(IMAGENET_DEFAULT_STD).view(1, -1, 1, 1)

    def _check_metadata(self) -> tuple[int, int]:
        """(img_size, classes) of the metadata `dlcvkit export` writes, for this model's task."""
        found = self.metadata.get("task")
        if found not in TASKS or not all(self.metadata.get(k, "").isdigit() for k in ("img_size", "classes")):
            raise DlcvkitError(
                f"--onnx {self.path} has no dlcvkit metadata (task, img_size, classes); export it with `dlcvkit export`"
            )
        if found != self.task:
            command = "predict cls" if found == "classify" else "predict seg"
            raise DlcvkitError(f"--onnx {self.path} is a '{found}' model; use `dlcvkit {command} --onnx`")
        return int(self.metadata["img_size"]), int(self.metadata["classes"])

    def _check_input(self) -> None:
        """Refuse a graph that does not take float pixels `b 3 h w` at img_size, or gives no logits."""
        inputs, outputs = self.session.get_inputs(), [o.name for o in self.session.get_outputs()]
        shape = inputs[0].shape if len(inputs) == 1 else []
        fits = (len(inputs) == 1 and inputs[0].name == INPUT and inputs[0].type == "tensor(float)" and len(shape) == 4
                and shape[1] == 3 and all(not isinstance(d, int) or d == self.img_size for d in shape[2:])
                and OUTPUT in outputs)
        if not fits:
            found = ", ".join(f"'{i.name}' {i.type} {i.shape}" for i in inputs)
            raise DlcvkitError(
                f"--onnx {self.path} does not fit: it takes {found} and gives {outputs}, not float pixels '{INPUT}' "
                f"b x 3 x {self.img_size} x {self.img_size} to '{OUTPUT}'; give a file written by `dlcvkit export`"
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # the graph normalises the pixels itself: undo the caller's normalize(to_unit(images))
        pixels = ((x.detach().float().cpu() * self._std + self._mean) * 255).numpy()
        batch = "x".join(map(str, pixels.shape))
        try:
            logits = self.session.run([OUTPUT], {INPUT: pixels})[0]
        except Exception as e:  # noqa: BLE001 - onnxruntime's own exception types
            raise DlcvkitError(f"--onnx {self.path} cannot run on pixels {batch} ({first_line(e)}); "
                               "give a file written by `dlcvkit export`") from None
        expected = (len(pixels), self.classes, *(pixels.shape[2:] if self.task == "segment" else ()))
        if logits.shape != expected:
            raise DlcvkitError(f"--onnx {self.path} gives logits {'x'.join(map(str, logits.shape))} on pixels "
                               f"{batch}, not {'x'.join(map(str, expected))}; give a file written by `dlcvkit export`")
        if not np.isfinite(logits).all():  # nothing is predicted from them
            raise DlcvkitError(f"--onnx {self.path} gives inf/nan logits on pixels {batch}: the model is damaged; "
                               "export it again with `dlcvkit export`")
        return torch.from_numpy(logits).to(x.device)


def onnx_run(path: Path, task: str) -> tuple[Recipe, OnnxModel]:
    """(a recipe standing in for the run's: the metadata's img_size, the CPU, batches of one image unless
    --batch-size says otherwise; the exported model) of an export of `task`, for the inference code of a run."""
    path = Path(path)
    model = OnnxModel(path, task)
    if not model.verified and is_launch_main_process():  # one note, from the launch's first process
        print(f"dlcvkit: note: --onnx {path} has no checksum file {checksum_file(path)} (exported by hand or by "
              "an earlier dlcvkit): its bytes are not verified, only its weights checked to be finite",
              file=sys.stderr)
    recipe = task_classes(task)[0]()
    recipe.data.img_size, recipe.data.batch_size = model.img_size, 1
    recipe.train = TrainConfig(cpu=True)
    return recipe, model


def onnx_members(path: Path):
    """(an accelerator on the CPU, [the exported classifier as the one member of an ensemble]) for `predict cls`."""
    from dlcvkit.engine.distributed import make_accelerator
    from dlcvkit.runs.ensemble import Member

    recipe, model = onnx_run(path, "classify")
    return make_accelerator(recipe.train), [Member(str(path), recipe, model)]


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DlcvkitError(f"ONNX export and `--onnx` need {module}: {EXTRA}") from None
