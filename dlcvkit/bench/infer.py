"""Inference, images/s: `dlcvkit predict seg` (read the JPEGs, predict, write the course's colour masks) or
`dlcvkit predict cls` (read the images at the run's size, predict, write the CSV) end to end, the model's forward
pass and argmax alone on the same images already on the device (the end to end's speed-up against it says how
much of the forward pass's rate the data path keeps), and (fp32, with the `[onnx]` extra) the command with
`--onnx` end to end on the model's ONNX export; for a run folder holding an untrained model of the chosen
architecture (the speed does not depend on the weights). The contenders' repeats alternate (`measure_interleaved`).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Callable

import torch
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed

from dlcvkit.bench.timing import measure_interleaved, record
from dlcvkit.config import Recipe, write_recipe
from dlcvkit.data.folders import UnlabeledFolder
from dlcvkit.data.satellite import SatellitePairs
from dlcvkit.data.synth import synth_cls, synth_seg
from dlcvkit.engine.distributed import pick_device
from dlcvkit.engine.task import Task
from dlcvkit.engine.weights import save_weights
from dlcvkit.runs.classify import predict_runs
from dlcvkit.runs.export import export_onnx
from dlcvkit.runs.load import load_run
from dlcvkit.runs.segment import predict_run
from dlcvkit.runnames import MODEL_FILE, RECIPE_FILE
from dlcvkit.tasks.classify import ClassifyRecipe, ClassifyTask, classifier_logits
from dlcvkit.tasks.segment import SegmentRecipe, SegmentTask, predict_masks

BENCH = "infer"
PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
CLASSES = 65  # Office-Home's


def make_run(folder: Path, recipe: Recipe, task: type[Task], precision: str, cpu: bool = False) -> Path:
    """A run folder as training leaves it (recipe.toml, model.safetensors) for `recipe`, with seeded random
    weights of `task`'s model; `cpu`: its recipe asks for the CPU even where a GPU is present."""
    recipe.train.precision, recipe.train.cpu = PRECISIONS[precision], cpu
    folder.mkdir(parents=True, exist_ok=True)
    write_recipe(recipe, folder / RECIPE_FILE)
    set_seed(0)
    save_weights(task(recipe).build_model().state_dict(), folder / MODEL_FILE)
    return folder


def segment_recipe(segmenter: str, backbone: str, img_size: int) -> SegmentRecipe:
    recipe = SegmentRecipe()
    recipe.model.name, recipe.model.backbone, recipe.data.img_size = segmenter, backbone, img_size
    return recipe


def classify_recipe(backbone: str, img_size: int, classes: int = CLASSES) -> ClassifyRecipe:
    recipe = ClassifyRecipe()
    recipe.model.backbone, recipe.model.num_classes, recipe.data.img_size = backbone, classes, img_size
    return recipe


def bench_infer(segmenter: str, backbone: str, *, images: int, img_size: int, batch: int, workers: int,
                precision: str, cache: Path, repeats: int, warmup: int, task: str = "seg",
                device: torch.device | None = None) -> list[dict]:
    """Records of `predict seg` or, with `task` "cls", `predict cls` (contender `dlcvkit`), of the forward pass
    and argmax alone (`forward`) and, where it applies, of the ONNX export end to end (`onnxruntime`), on
    `device` (default: a GPU if present)."""
    device = device or pick_device()
    image_dir = cache / f"infer_{task}_{images}x{img_size}"
    if not (image_dir / ".complete").exists():
        (synth_seg if task == "seg" else synth_cls)(image_dir, images, img_size, seed=1, overwrite=True)
        (image_dir / ".complete").touch()
    work = cache / "infer_run"
    shutil.rmtree(work, ignore_errors=True)
    cpu = device.type == "cpu"
    if task == "seg":
        run_dir = make_run(work / "run", segment_recipe(segmenter, backbone, img_size), SegmentTask, precision, cpu)
        model_name = f"{segmenter}/{backbone}"
    else:
        run_dir = make_run(work / "run", classify_recipe(backbone, img_size), ClassifyTask, precision, cpu)
        model_name = backbone
    out = work / ("masks" if task == "seg" else "predictions.csv")

    def predict(model: Path = run_dir) -> None:
        AcceleratorState._reset_state(reset_partial_state=True)  # the command builds its own Accelerator
        if task == "seg":
            predict_run(model, image_dir, out, batch_size=batch, num_workers=workers, overwrite=True)  # repeats
        elif model == run_dir:
            predict_runs([model], image_dir, out, batch_size=batch, num_workers=workers, overwrite=True)
        else:
            predict_runs([], image_dir, out, onnx=model, batch_size=batch, num_workers=workers, overwrite=True)

    case = f"{task} {model_name} {img_size}px b{batch} {precision}"
    params = {"task": task, "model": model_name, "img_size": img_size, "batch": batch, "precision": precision}
    contenders = {"dlcvkit": predict, "forward": _forward_alone(run_dir, image_dir, task, batch, precision, device)}
    if precision == "fp32" and all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript")):
        export_onnx(run_dir, work / "model.onnx")
        contenders["onnxruntime"] = lambda: predict(work / "model.onnx")
    timings = measure_interleaved(contenders, items=images, repeats=repeats, warmup=warmup, device=device)
    records = [record(BENCH, case, name, timing, **params, **({} if name == "forward" else {"workers": workers}))
               for name, timing in timings.items()]
    shutil.rmtree(work, ignore_errors=True)
    return records


def _forward_alone(run_dir: Path, image_dir: Path, task: str, batch: int, precision: str,
                   device: torch.device) -> Callable[[], None]:
    """The model's forward pass and argmax over the images already decoded, on the device, in batches."""
    recipe, _, model = load_run(run_dir, "last", device)
    size = recipe.data.img_size
    dataset = SatellitePairs(image_dir, with_masks=False) if task == "seg" else UnlabeledFolder(image_dir, size)
    stacked = torch.stack([dataset[i]["image"] for i in range(len(dataset))]).to(device)
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16

    @torch.no_grad()
    def forward() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32"):
            for chunk in stacked.split(batch):
                if task == "seg":
                    predict_masks(model, chunk, size)
                else:
                    classifier_logits(model, chunk).float().softmax(dim=1).argmax(dim=1)

    return forward
