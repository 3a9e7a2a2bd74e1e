"""Segmentation commands on finished runs and mask files: `eval seg`, `predict seg`."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlcvkit.cli.options import (INFERENCE, PREDICTION, JsonOpt, OverwriteOpt, SkipBadOpt, inference,
                                 prediction, with_options)
from dlcvkit.errors import DlcvkitError

TileOpt = Annotated[int, typer.Option("--tile", help="Predict by sliding windows of this side in pixels, blended where "
                                                    "they overlap (e.g. 512 for larger photos; 0 = whole images).")]
OverlapOpt = Annotated[Optional[int], typer.Option("--overlap", help="--tile: pixels shared by neighbouring windows "
                                                                     "(default a quarter of the tile).")]
RunOpt = Annotated[Optional[Path], typer.Option("--run", help="A finished segmentation run folder (RUN_DIR).")]
TtaOpt = Annotated[bool, typer.Option("--tta", help="Test-time augmentation: average the class probabilities over "
                                                   "the image and its horizontal, vertical and both-axes flips.")]
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


@with_options(*INFERENCE)
def eval_seg(
    pred: Annotated[Optional[Path], typer.Option("--pred", help="Folder of predicted xxxx_mask.png.")] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="Folder of ground-truth xxxx_mask.png.")] = None,
    run: RunOpt = None,
    data: Annotated[
        Optional[Path], typer.Option("--data", help="With --run: a folder of xxxx_sat.jpg + xxxx_mask.png "
                                                    "(default: the run's validation data, data.val).")
    ] = None,
    tta: TtaOpt = False,
    red_as: RedOpt = None,
    absent: Annotated[
        Absent,
        typer.Option("--absent", help="A class in neither predictions nor labels: 'nan' (the course's script: its "
                                      "IoU and mean_iou are nan, with a note on stderr) or 'skip' (mean_iou over "
                                      "the other classes)."),
    ] = Absent.nan,
    json_path: JsonOpt = None,
    skip_bad: SkipBadOpt = False,
    mask_format: MaskFormatOpt = None,
    overwrite: OverwriteOpt = False,
    **options,
) -> None:
    """The course's mean IoU: classes 0..5, pixels counted over the whole set, Unknown pixels not ignored.

    Either --pred DIR --labels DIR: mask files paired by name.

    Or --run RUN_DIR [--data DIR]: a trained model on DIR (default: the run's validation data), also under
    `dlcvkit launch` (the same digits on N processes); pixels labelled the run's data.ignore_index (if set) are
    not counted.

    Example: dlcvkit eval seg --run runs/fcn8s --data p2/validation
    """
    from dlcvkit.runs.scoring import confusion_of_mask_files, iou_report
    from dlcvkit.outputs import check_output_file
    from dlcvkit.runs.load import data_or_validation
    from dlcvkit.runs.segment import evaluate_run
    from dlcvkit.tasks.segment import TTA_NOTE

    files, model = (pred, labels), (run, data)
    if any(v is not None for v in files) == any(v is not None for v in model):
        raise DlcvkitError("eval seg: pass either --pred DIR --labels DIR, or --run RUN_DIR [--data DIR]")
    if json_path is not None:
        check_output_file(json_path, "--json", overwrite, {"--pred": pred, "--labels": labels, "--run": run,
                                                           "--data": data})
    if any(v is not None for v in files):
        if None in files:
            raise DlcvkitError("eval seg: --pred and --labels go together")
        if skip_bad:
            raise DlcvkitError("eval seg: --skip-bad goes with --run and --data; every mask file is scored")
        if tta:
            raise DlcvkitError("eval seg: --tta goes with --run (it predicts); --pred masks are scored as they are")
        matrix, _ = confusion_of_mask_files(pred, labels, red_as, mask_format_value(mask_format) or "colour")
        main, notes, run_numbers = True, [], {}
    else:
        if run is None:
            raise DlcvkitError("eval seg: --data goes with --run RUN_DIR")
        data, note = data_or_validation(run, data, ("segment",))
        matrix, main, ignore = evaluate_run(run, data, red_as=red_as, tta=tta, skip_bad=skip_bad,
                                            mask_format=mask_format_value(mask_format), **inference(options))
        notes = [note] if note else []
        notes += [TTA_NOTE] if tta else []
        if ignore is not None:
            notes.append(f"pixels labelled {ignore} (data.ignore_index of --run {run}) are not counted")
        run_numbers = {"tta": tta, "ignore_index": ignore}
    if not main:
        return
    text, numbers, iou_notes = iou_report(matrix, absent.value)
    for note in notes + iou_notes:
        print(f"dlcvkit: note: {note}", file=sys.stderr)
    sys.stdout.write(text)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(numbers | run_numbers, indent=1) + "\n")


@with_options(*PREDICTION)
def predict_seg(
    run: RunOpt = None,
    data: Annotated[Path, typer.Option("--data", help="Folder of xxxx_sat.jpg (or GeoTIFFs xxxx_sat.tif).")] = ...,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the xxxx_mask.png files (.tif for GeoTIFFs).")] = ...,
    tta: TtaOpt = False,
    tile: TileOpt = 0,
    overlap: OverlapOpt = None,
    **options,
) -> None:
    """The course's inference: one RGB xxxx_mask.png (course colours, the image's size) per xxxx_sat.jpg.

    Images of several sizes are batched by size; each mask has its image's size.

    Example: dlcvkit predict seg --run runs/fcn8s --data p2/validation --out pred_masks --tta
    """
    from dlcvkit.runs.segment import predict_run
    from dlcvkit.tasks.segment import TTA_NOTE

    if (run is None) == (options["onnx"] is None):
        raise DlcvkitError("predict seg needs --run RUN_DIR or --onnx MODEL.onnx (one of them)")
    written = predict_run(run or options["onnx"], data, out, tta=tta, tile=tile, overlap=overlap, **prediction(options))
    print(f"wrote {written} masks to {out}" + (f" ({TTA_NOTE})" if tta else ""), file=sys.stderr)


def mask_format_value(mask_format: MaskFormat | None) -> str | None:
    """--mask-format as the readers take it (None: the run's, else colour)."""
    return None if mask_format is None else mask_format.value
