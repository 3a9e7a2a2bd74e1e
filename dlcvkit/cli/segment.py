"""Segmentation commands: `dlcvkit segment` (train), `eval seg`, `predict seg`, `viz mask`."""

from __future__ import annotations

import json
import sys
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

RunOpt = Annotated[Optional[Path], typer.Option("--run", help="A finished segmentation run folder (RUN_DIR).")]
WeightsOpt = Annotated[str, typer.Option("--weights", help="'best' (best.safetensors, by mIoU) or 'last'.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images per forward pass (0 = the recipe's).")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="Decoding processes (-1 = the recipe's).")]
TtaOpt = Annotated[bool, typer.Option("--tta", help="Average the softmax over the image and its h/v flips.")]
RedOpt = Annotated[
    Optional[int], typer.Option("--red-as", help="Read red (255,0,0) mask pixels as this class id (default: error).")
]


class MaskFormat(str, Enum):
    colour = "colour"
    index = "index"


MaskFormatOpt = Annotated[
    Optional[MaskFormat],
    typer.Option("--mask-format", help="How the masks store classes: 'colour' (the course's RGB colours) or 'index' "
                                       "(8-bit grey class ids 0..6). Default: colour (with --run: the run's "
                                       "data.mask_format)."),
]


class Absent(str, Enum):
    nan = "nan"
    skip = "skip"


def segment(
    recipe: RecipeOpt = None,
    data: DataOpt = None,
    val: ValOpt = None,
    out: OutOpt = None,
    set_: SetOpt = None,
    max_steps: MaxStepsOpt = 0,
    resume: ResumeOpt = None,
    overwrite: OverwriteOpt = False,
    cache: CacheOpt = None,
    track: Annotated[
        Optional[str],
        typer.Option("--track", help="Validation images to predict after every epoch, e.g. 0008,0097,0107 "
                                     "(sets viz.track; RUN_DIR/track.png shows them at the end)."),
    ] = None,
) -> None:
    """Train a segmenter (FCN32s/16s/8s or DeepLabv3 on a timm encoder) on xxxx_sat.jpg + xxxx_mask.png folders."""
    from dlcvkit.tasks.segment import SegmentRecipe, SegmentTask

    overrides = with_cache(set_, cache)
    if track is not None:
        names = [n.strip() for n in track.split(",") if n.strip()]
        overrides.append(f"viz.track={json.dumps(names)}")
    run_training(SegmentTask, SegmentRecipe, recipe=recipe, data=data, val=val, out=out, overrides=overrides,
                 max_steps=max_steps, resume=resume, overwrite=overwrite)


def eval_seg(
    pred: Annotated[Optional[Path], typer.Option("--pred", help="Folder of predicted xxxx_mask.png.")] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Folder of ground-truth xxxx_mask.png.")] = None,
    run: RunOpt = None,
    data: Annotated[
        Optional[Path], typer.Option("--data", help="With --run: a folder of xxxx_sat.jpg + xxxx_mask.png.")
    ] = None,
    weights: WeightsOpt = "best",
    batch_size: BatchOpt = 0,
    workers: WorkersOpt = -1,
    tta: TtaOpt = False,
    red_as: RedOpt = None,
    absent: Annotated[
        Absent,
        typer.Option("--absent", help="A class in neither predictions nor labels: 'nan' (the course's script: its "
                                      "IoU and mean_iou are nan, with a note on stderr) or 'skip' (mean_iou over "
                                      "the other classes)."),
    ] = Absent.nan,
    json_path: Annotated[
        Optional[Path], typer.Option("--json", help="Also write the numbers to this JSON file.")
    ] = None,
    skip_bad: SkipBadOpt = False,
    mask_format: MaskFormatOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """The course's mean IoU: classes 0..5, pixels counted over the whole set, Unknown pixels not ignored.

    Either --pred DIR --labels DIR: mask files paired by name.

    Or --run RUN_DIR --data DIR: a trained model, also under `dlcvkit launch` (the same digits on N processes).
    """
    from dlcvkit.outputs import check_output_file
    from dlcvkit.tasks.segment import confusion_of_mask_files, evaluate_run, iou_report

    files, model = (pred, labels), (run, data)
    if any(v is not None for v in files) == any(v is not None for v in model):
        raise DlcvkitError("eval seg: pass either --pred DIR --labels DIR, or --run RUN_DIR --data DIR")
    if json_path is not None:
        check_output_file(json_path, "--json", overwrite, {"--pred": pred, "--labels": labels, "--run": run,
                                                           "--data": data})
    if any(v is not None for v in files):
        if None in files:
            raise DlcvkitError("eval seg: --pred and --labels go together")
        if skip_bad:
            raise DlcvkitError("eval seg: --skip-bad goes with --run and --data; every mask file is scored")
        matrix, _ = confusion_of_mask_files(pred, labels, red_as, _format(mask_format) or "colour")
        main = True
    else:
        if None in model:
            raise DlcvkitError("eval seg: --run and --data go together")
        matrix, main = evaluate_run(run, data, weights=weights, batch_size=batch_size, num_workers=workers,
                                    red_as=red_as, tta=tta, skip_bad=skip_bad, mask_format=_format(mask_format))
    if not main:
        return
    text, numbers, notes = iou_report(matrix, absent.value)
    for note in notes:
        print(f"dlcvkit: note: {note}", file=sys.stderr)
    sys.stdout.write(text)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(numbers, indent=1) + "\n")


def predict_seg(
    run: RunOpt = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="Folder of xxxx_sat.jpg.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the xxxx_mask.png files.")] = None,
    weights: WeightsOpt = "best",
    batch_size: BatchOpt = 0,
    workers: WorkersOpt = -1,
    tta: TtaOpt = False,
    skip_bad: PredictSkipBadOpt = False,
    overwrite: OverwriteOpt = False,
    onnx: Annotated[
        Optional[Path], typer.Option("--onnx", help="Instead of --run: a model from `dlcvkit export`, run by "
                                                    "onnxruntime on the CPU (batches of 1 unless --batch-size).")
    ] = None,
    cache: CacheOpt = None,
) -> None:
    """The course's inference: one RGB xxxx_mask.png (course colours, the image's size) per xxxx_sat.jpg.

    Images of several sizes are batched by size; each mask has its image's size."""
    from dlcvkit.tasks.segment import predict_run

    if (run is None) == (onnx is None) or images is None or out is None:
        raise DlcvkitError("predict seg needs --run RUN_DIR (or --onnx MODEL.onnx) --images DIR --out DIR")
    written = predict_run(run or onnx, images, out, weights=weights, batch_size=batch_size, num_workers=workers,
                          tta=tta, skip_bad=skip_bad, overwrite=overwrite, cache=cache.value if cache else "none")
    print(f"wrote {written} masks to {out}", file=sys.stderr)


def viz_mask(
    image: Annotated[Path, typer.Option("--image", help="A satellite image, e.g. 0008_sat.jpg.")],
    mask: Annotated[Path, typer.Option("--mask", help="Its colour mask (ground truth or prediction).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The picture to write (.png).")],
    alpha: Annotated[float, typer.Option("--alpha", help="Opacity of the class colours inside regions.")] = 0.4,
    width: Annotated[int, typer.Option("--width", help="Boundary half-width in pixels.")] = 1,
    red_as: RedOpt = None,
    mask_format: MaskFormatOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """The image tinted with its mask's class colours, class boundaries drawn (the course's mask viewer)."""
    from dlcvkit.data.images import read_image, write_image
    from dlcvkit.data.masks import read_mask
    from dlcvkit.outputs import check_output_file
    from dlcvkit.viz.masks import overlay

    check_output_file(out, "--out", overwrite, {"--image": image, "--mask": mask})
    if not 0 <= alpha <= 1:
        raise DlcvkitError(f"--alpha {alpha}: use a value in [0, 1]")
    if width < 0:
        raise DlcvkitError(f"--width {width}: use 0 or more pixels")
    picture = read_image(image)
    ids = read_mask(mask, red_as, _format(mask_format) or "colour")
    if tuple(ids.shape) != tuple(picture.shape[1:]):
        raise DlcvkitError(
            f"{image} is {picture.shape[2]}x{picture.shape[1]} but {mask} is {ids.shape[1]}x{ids.shape[0]}; "
            "they must match"
        )
    write_image(out, overlay(picture, ids, alpha, width))


def _format(mask_format: MaskFormat | None) -> str | None:
    return None if mask_format is None else mask_format.value
