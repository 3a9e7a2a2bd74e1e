"""Segmentation inference, images/s: `dlcvkit predict seg` end to end (read the JPEGs, predict, write the
course's colour masks), the model's forward pass alone on the same images already in memory, and (fp32, with
the `[onnx]` extra) `predict seg --onnx` end to end on the model's ONNX export, for a run folder holding an
untrained model of the chosen architecture (the speed does not depend on the weights).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import torch
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed

from dlcvkit.bench.timing import measure, record
from dlcvkit.config import write_recipe
from dlcvkit.data.datasets import SatellitePairs
from dlcvkit.data.synth import synth_seg
from dlcvkit.engine.distributed import pick_device
from dlcvkit.engine.weights import save_weights
from dlcvkit.runs.export import export_onnx
from dlcvkit.runs.load import load_run
from dlcvkit.runs.segment import predict_run
from dlcvkit.tasks.segment import SegmentRecipe, SegmentTask, predict_masks

BENCH = "infer"
PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def make_run(folder: Path, segmenter: str, backbone: str, img_size: int, precision: str, cpu: bool = False) -> Path:
    """A run folder as `dlcvkit segment` leaves it (recipe.toml, model.safetensors), with seeded random weights;
    `cpu`: its recipe asks for the CPU even where a GPU is present."""
    recipe = SegmentRecipe()
    recipe.model.name, recipe.model.backbone = segmenter, backbone
    recipe.data.img_size, recipe.train.precision, recipe.train.cpu = img_size, PRECISIONS[precision], cpu
    folder.mkdir(parents=True, exist_ok=True)
    write_recipe(recipe, folder / "recipe.toml")
    set_seed(0)
    save_weights(SegmentTask(recipe).build_model().state_dict(), folder / "model.safetensors")
    return folder


def bench_infer(segmenter: str, backbone: str, *, images: int, img_size: int, batch: int, workers: int,
                precision: str, cache: Path, repeats: int, warmup: int,
                device: torch.device | None = None) -> list[dict]:
    """Records of `predict seg` (contender `dlcvkit`) and of the forward pass alone (`forward`), on `device`
    (default: a GPU if present)."""
    device = device or pick_device()
    image_dir = cache / f"infer_{images}x{img_size}"
    if not (image_dir / ".complete").exists():
        synth_seg(image_dir, images, img_size, seed=1, overwrite=True)
        (image_dir / ".complete").touch()
    work = cache / "infer_run"
    shutil.rmtree(work, ignore_errors=True)
    run_dir = make_run(work / "run", segmenter, backbone, img_size, precision, cpu=device.type == "cpu")
    out_dir = work / "masks"

    def predict(model: Path = run_dir) -> None:
        AcceleratorState._reset_state(reset_partial_state=True)  # predict_run builds its own Accelerator
        predict_run(model, image_dir, out_dir, batch_size=batch, num_workers=workers, overwrite=True)  # repeats

    case = f"seg {segmenter}/{backbone} {img_size}px b{batch} {precision}"
    params = {"task": "seg", "model": f"{segmenter}/{backbone}", "img_size": img_size, "batch": batch,
              "precision": precision}
    records = [record(BENCH, case, "dlcvkit", measure(predict, items=images, repeats=repeats, warmup=warmup,
                                                       device=device), **params, workers=workers)]

    _, _, model = load_run(run_dir, "last", device)
    dataset = SatellitePairs(image_dir, with_masks=False)
    stacked = torch.stack([dataset[i]["image"] for i in range(len(dataset))]).to(device)
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16

    def forward() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=precision != "fp32"):
            for chunk in stacked.split(batch):
                predict_masks(model, chunk, img_size)

    records.append(record(BENCH, case, "forward", measure(forward, items=images, repeats=repeats, warmup=warmup,
                                                          device=device), **params))
    if precision == "fp32" and all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript")):
        export_onnx(run_dir, work / "model.onnx")
        timing = measure(lambda: predict(work / "model.onnx"), items=images, repeats=repeats, warmup=warmup,
                         device=torch.device("cpu"))
        records.append(record(BENCH, case, "onnxruntime", timing, **params, workers=workers))
    shutil.rmtree(work, ignore_errors=True)
    return records
