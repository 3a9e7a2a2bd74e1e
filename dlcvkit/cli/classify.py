"""Classification commands: `classify` (train), `eval cls`, `predict cls` (one run or an ensemble), `tsne`, and
`summary` (the architecture as a layer table, for any timm model, run folder or segmenter)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlcvkit.cli.common import (
    CacheOpt,
    DataOpt,
    MaxStepsOpt,
    OutOpt,
    OverwriteOpt,
    PredictSkipBadOpt,
    RecipeOpt,
    ResumeOpt,
    SetOpt,
    SkipBadOpt,
    ValOpt,
    run_training,
    with_cache,
)
from dlcvkit.errors import DlcvkitError


class Weights(str, Enum):
    best = "best"
    last = "last"
    ema = "ema"


class Layer(str, Enum):
    penultimate = "penultimate"
    backbone = "backbone"


class Method(str, Enum):
    tsne = "tsne"
    pca = "pca"


class SummaryTask(str, Enum):
    cls = "cls"
    seg = "seg"


RunsOpt = Annotated[list[Path], typer.Option("--run", help="Run folder; repeat for an ensemble (mean of softmax).")]
WeightsOpt = Annotated[
    Weights, typer.Option("--weights", help="best.safetensors (else the last), model.safetensors, or ema.safetensors.")
]
CsvOpt = Annotated[
    Optional[Path], typer.Option("--csv", help="Images CSV (id,filename,label) naming the files of the folder.")
]
LayoutOpt = Annotated[str, typer.Option("--layout", help="Data layout: auto, p1, csv or imagefolder.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images per forward pass and process.")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="DataLoader workers per process.")]


def classify(
    recipe: RecipeOpt = None,
    data: DataOpt = None,
    val: ValOpt = None,
    out: OutOpt = None,
    set_: SetOpt = None,
    max_steps: MaxStepsOpt = 0,
    resume: ResumeOpt = None,
    overwrite: OverwriteOpt = False,
    cache: CacheOpt = None,
) -> None:
    """Train a classifier: any timm backbone, recipe-defined head (P1 folder, ImageFolder or CSV data)."""
    from dlcvkit.tasks.classify import ClassifyRecipe, ClassifyTask

    run_training(ClassifyTask, ClassifyRecipe, recipe=recipe, data=data, val=val, out=out,
                 overrides=with_cache(set_, cache), max_steps=max_steps, resume=resume, overwrite=overwrite)


def eval_cls(
    run: RunsOpt,
    data: Annotated[Path, typer.Option("--data", help="Labelled images: P1 folder, ImageFolder, or folder + --csv.")],
    csv: CsvOpt = None,
    layout: LayoutOpt = "auto",
    weights: WeightsOpt = Weights.best,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON.")] = None,
    confusion: Annotated[
        Optional[Path], typer.Option("--confusion", help="Write the confusion matrix as a PNG.")
    ] = None,
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = 2,
    skip_bad: SkipBadOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Accuracy and per-class accuracy of a run, or of an ensemble of runs (mean of softmax probabilities).

    Runs under `dlcvkit launch` too: every image is counted once, and N processes print what 1 prints.
    """
    import sys

    from dlcvkit.data.datasets import open_labeled, skip_unreadable
    from dlcvkit.outputs import check_output_file
    from dlcvkit.tasks.classify import evaluate_members

    for option, path in (("--json", json_out), ("--confusion", confusion)):
        if path is not None:
            check_output_file(path, option, overwrite, {"--data": data, "--csv": csv})
    accelerator, members = _members(run, weights)
    classes = members[0].model.head[-1].out_features

    def open_data(size: int):
        dataset = open_labeled(data, size, layout, csv, num_classes=classes)
        if skip_bad:
            note = skip_unreadable(dataset, f"--data {data} (--skip-bad)", workers)
            if accelerator.is_main_process:
                print(f"dlcvkit: note: {note}", file=sys.stderr)
        return dataset

    result = evaluate_members(members, open_data, accelerator, batch_size, workers)
    if accelerator.is_main_process:
        _print_evaluation(result)
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(result, indent=1) + "\n")
        if confusion is not None:
            from dlcvkit.viz.confusion import plot_confusion

            typer.echo(f"confusion matrix: {plot_confusion(result['confusion'], confusion)}")
    accelerator.wait_for_everyone()


def predict_cls(
    images: Annotated[Path, typer.Option("--images", help="Folder of the images to classify.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output CSV of predictions.")],
    run: RunsOpt = None,
    onnx: Annotated[
        Optional[Path], typer.Option("--onnx", help="Instead of --run: a model from `dlcvkit export`, run by "
                                                    "onnxruntime on the CPU.")
    ] = None,
    csv: Annotated[
        Optional[Path], typer.Option("--csv", help="Images CSV (id,filename[,label]): output id,filename,label "
                                                   "in its row order; without it filename,label sorted by name.")
    ] = None,
    weights: WeightsOpt = Weights.best,
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = 2,
    skip_bad: PredictSkipBadOpt = False,
    overwrite: OverwriteOpt = False,
    cache: CacheOpt = None,
) -> None:
    """Predict a class for every image, in the course's CSV format (one run, an ensemble, or an ONNX export).

    Images of any size are read at the run's `data.img_size`."""
    import csv as csv_module

    from accelerate.utils import gather_object

    from dlcvkit.data.cache import cached_for_inference
    from dlcvkit.data.datasets import LabeledCsv, UnlabeledFolder, drop_unreadable, incomplete_output
    from dlcvkit.outputs import check_output_file
    from dlcvkit.tasks.classify import ensemble_prediction, member_probabilities

    check_output_file(out, "--out", overwrite, {"--csv": csv, "--images": images})
    if onnx is None:
        accelerator, members = _members(run, weights)
    elif run:
        raise DlcvkitError("predict cls: pass --run RUN_DIR (one or more) or --onnx MODEL.onnx, not both")
    else:
        from dlcvkit.runs.export import onnx_members

        accelerator, members = onnx_members(onnx)
    skipped: list[Path] = []
    total = 0

    def open_images(size: int):
        nonlocal skipped, total
        dataset = UnlabeledFolder(images, size) if csv is None else LabeledCsv(csv, images, size)
        total = len(dataset)
        if skip_bad:
            skipped = drop_unreadable(dataset, f"--skip-bad {images}", workers)
        return cached_for_inference(dataset, f"--images {images}", cache.value if cache else "none",
                                    members[0].recipe.data.cache_dir, workers, accelerator)

    indices, probs, dataset = member_probabilities(members, open_images, accelerator, batch_size, workers)
    pairs = list(zip(indices.tolist(), ensemble_prediction(probs).tolist()))
    pairs = gather_object(pairs) if accelerator.num_processes > 1 else pairs
    if accelerator.is_main_process:
        labels = dict(pairs)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as f:
            writer = csv_module.writer(f, lineterminator="\n")
            if csv is None:
                writer.writerow(["filename", "label"])
                writer.writerows((name, labels[i]) for i, name in enumerate(dataset.names))
            else:
                writer.writerow(["id", "filename", "label"])
                writer.writerows((dataset.ids[i], name, labels[i]) for i, name in enumerate(dataset.names))
        typer.echo(f"wrote {len(labels)} predictions to {out}")
    accelerator.wait_for_everyone()
    if skipped:
        raise incomplete_output(skipped, total, f"predictions are in {out}")


def tsne(
    run: Annotated[Path, typer.Option("--run", help="Run folder of a classifier (classify, finetune, ...).")],
    data: Annotated[Path, typer.Option("--data", help="Labelled images: P1 folder, ImageFolder, or folder + --csv.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write.")],
    csv: CsvOpt = None,
    layout: LayoutOpt = "auto",
    layer: Annotated[Layer, typer.Option(
        "--layer", help="penultimate: the last linear layer's input; backbone: the backbone's pooled output."
    )] = Layer.penultimate,
    method: Annotated[Method, typer.Option("--method", help="t-SNE or PCA (scikit-learn).")] = Method.tsne,
    weights: WeightsOpt = Weights.best,
    max_samples: Annotated[int, typer.Option("--max-samples", help="Use an evenly spaced subset of at most N "
                                                                   "images (0 = all).")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of t-SNE / PCA.")] = 0,
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = 2,
    overwrite: OverwriteOpt = False,
) -> None:
    """Picture the features of a trained classifier in 2-D (t-SNE or PCA), coloured by class."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Subset

    from dlcvkit.augment.common import normalize, to_unit
    from dlcvkit.data.datasets import open_labeled
    from dlcvkit.outputs import check_output_file
    from dlcvkit.viz.tsne import plot_embedding

    check_output_file(out, "--out", overwrite, {"--data": data, "--csv": csv})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    member = _load_members([run], weights, device)[0]
    model = member.model
    dataset = open_labeled(data, member.recipe.data.img_size, layout, csv,
                           num_classes=model.head[-1].out_features)
    if dataset.labels is None:
        raise DlcvkitError(f"--data {data}: the pictures are coloured by class, but this CSV has no labels")
    chosen = np.arange(len(dataset))
    if 0 < max_samples < len(dataset):
        chosen = np.linspace(0, len(dataset) - 1, max_samples).round().astype(int)
    extract = model.features if layer is Layer.penultimate else model.backbone_features
    features = []
    with torch.no_grad():
        for batch in DataLoader(Subset(dataset, chosen.tolist()), batch_size=batch_size, num_workers=workers):
            features.append(extract(normalize(to_unit(batch["image"].to(device)))).float().cpu())
    labels = np.asarray(dataset.labels)[chosen]
    written = plot_embedding(torch.cat(features).numpy(), labels, out, method=method.value, seed=seed,
                             class_names=getattr(dataset, "classes", None),
                             title=f"{method.value.upper() if method is Method.pca else 't-SNE'} of the {layer.value} "
                                   f"features of {run.name} ({len(chosen)} images)")
    typer.echo(f"wrote {written}")


def summary(
    model: Annotated[str, typer.Argument(help="A timm model name, a run folder, or with --task seg NAME:BACKBONE "
                                              "(e.g. fcn8s:vgg16).")],
    input_size: Annotated[Optional[tuple[int, int, int]], typer.Option(
        "--input-size", help="C H W of one input (default: the run's data.img_size, 512 for seg, else the "
                             "model's own)."
    )] = None,
    task: Annotated[
        SummaryTask, typer.Option("--task", help="cls: a timm classifier; seg: a segmenter.")
    ] = SummaryTask.cls,
    num_classes: Annotated[int, typer.Option("--num-classes", help="Classes of a model built by name (0 = its "
                                                                   "default; seg: 7).")] = 0,
    depth: Annotated[int, typer.Option("--depth", help="Nesting depth of the layer table.")] = 3,
    print_module: Annotated[bool, typer.Option("--print", help="Also print the plain module (print(model)).")] = False,
) -> None:
    """The architecture as a layer table: output shapes, parameters, total / trainable / non-trainable."""
    import torchinfo

    net, size = _summary_model(model, task, num_classes)
    size = tuple(input_size) if input_size else size
    if min(size) < 1:
        raise DlcvkitError(f"--input-size {' '.join(map(str, size))}: C, H and W must be positive")
    if print_module:
        typer.echo(str(net))
    stats = torchinfo.summary(net, input_size=(1, *size), depth=depth, device="cpu", verbose=0, mode="eval",
                              col_names=("output_size", "num_params", "trainable"), row_settings=("var_names",))
    typer.echo(str(stats))


def _summary_model(model: str, task: SummaryTask, num_classes: int):
    """(module, default input size c h w) for `summary`."""
    from dlcvkit.models.backbones import create_backbone

    if Path(model).is_dir():
        from dlcvkit.tasks.registry import run_recipe, task_classes

        recipe = run_recipe(Path(model))
        return task_classes(recipe.task)[1](recipe).build_model(), (3, recipe.data.img_size, recipe.data.img_size)
    if task is SummaryTask.seg:
        if ":" not in model:
            raise DlcvkitError(f"summary --task seg {model!r}: write the segmenter as NAME:BACKBONE, e.g. fcn8s:vgg16")
        try:
            from dlcvkit.models.segmenters import build_segmenter
        except ImportError as e:
            raise DlcvkitError(f"summary --task seg: the segmentation models are not available ({e})") from None
        name, backbone = model.split(":", 1)
        return build_segmenter(name, backbone, num_classes=num_classes or 7), (3, 512, 512)
    net = create_backbone(model, **({"num_classes": num_classes} if num_classes else {}))
    return net, tuple(net.pretrained_cfg.get("input_size", (3, 224, 224)))


def _members(runs: list[Path], weights: Weights):
    """The accelerator of this (possibly multi-process) command and the runs' models on its device."""
    from dlcvkit.config import TrainConfig
    from dlcvkit.engine.distributed import make_accelerator

    accelerator = make_accelerator(TrainConfig())
    return accelerator, _load_members(runs, weights, accelerator.device)


def _load_members(runs: list[Path], weights: Weights, device):
    from dlcvkit.engine.weights import load_weights, read_state_dict
    from dlcvkit.tasks.classify import load_members

    if not runs:
        raise DlcvkitError("give at least one --run RUN_DIR")
    if weights is not Weights.ema:
        return load_members(runs, weights.value, device)
    members = load_members(runs, "last", device)
    for member in members:  # the engine writes the model EMA's weights beside model.safetensors
        path = Path(member.run_dir) / "ema.safetensors"
        if not path.is_file():
            raise DlcvkitError(f"--weights ema: {path} does not exist (was the run trained with train.model_ema > 0?)")
        load_weights(member.model, read_state_dict(path), source=str(path))
    return members


def _print_evaluation(result: dict) -> None:
    members = result.get("member_acc")
    if members:
        typer.echo(f"ensemble of {len(members)} runs (mean of softmax probabilities)")
        for run_dir, acc in zip(result["runs"], members):
            typer.echo(f"  {run_dir}: acc {acc:.4f}")
    correct = sum(result["confusion"][i][i] for i in range(len(result["confusion"])))
    typer.echo(f"accuracy: {result['acc']:.6f} ({correct}/{result['samples']})")
    typer.echo("per-class accuracy:")
    for c, (acc, row) in enumerate(zip(result["per_class_acc"], result["confusion"])):
        typer.echo(f"  class {c}: {acc:.4f} ({row[c]}/{sum(row)})")
