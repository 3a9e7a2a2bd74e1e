"""`dlcvkit sam`: Segment Anything's automatic masks on satellite images, and with --refine-run a trained
segmenter's class masks painted over SAM's regions."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlcvkit.cli.options import DeviceOpt, OverwriteOpt, Weights, WeightsOpt
from dlcvkit.errors import DlcvkitError


class SamType(str, Enum):
    vit_b = "vit_b"
    vit_l = "vit_l"
    vit_h = "vit_h"


def sam(
    data: Annotated[Path, typer.Option("--data", help="Folder of xxxx_sat.jpg.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the outputs.")],
    checkpoint: Annotated[Optional[Path], typer.Option(
        "--checkpoint", help="A local Segment Anything checkpoint, e.g. sam_vit_b_01ec64.pth (where to get one: "
                             "run without it).")] = None,
    model_type: Annotated[Optional[SamType], typer.Option(
        "--model-type", help="The checkpoint's model (default: read from the checkpoint).")] = None,
    points_per_side: Annotated[int, typer.Option(
        "--points-per-side",
        help="Point prompts per image side: an N x N grid; time grows with N^2 (try 16 on a CPU).")] = 32,
    pred_iou_thresh: Annotated[float, typer.Option(
        "--pred-iou-thresh", help="Keep masks whose predicted IoU exceeds this.")] = 0.88,
    stability_score_thresh: Annotated[float, typer.Option(
        "--stability-score-thresh", help="Keep masks at least this stable under a shifted cutoff.")] = 0.95,
    refine_run: Annotated[Optional[Path], typer.Option(
        "--refine-run", help="A segmentation run (RUN_DIR): paint each SAM region with its majority class.")] = None,
    weights: WeightsOpt = Weights.best,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
) -> None:
    """Segment Anything's automatic masks for every xxxx_sat.jpg, one image at a time.

    Writes OUT/xxxx_regions.png (each mask in its own colour) and OUT/xxxx_regions.npz (the masks as bits,
    largest first, with their scores).

    With --refine-run also OUT/segmenter/xxxx_mask.png (the run's prediction) and OUT/refined/xxxx_mask.png:
    each SAM region painted with the class the run predicts on most of its pixels, smaller regions over larger
    ones, uncovered pixels left with the run's class. `dlcvkit eval seg` compares the two folders.

    Example: dlcvkit sam --checkpoint sam_vit_b_01ec64.pth --data p2/validation --out sam_out --refine-run runs/fcn8s
    """
    from dlcvkit.models.sam import where_to_get_checkpoints
    from dlcvkit.runs.sam_refine import REFINED_DIR, SEGMENTER_DIR, run_sam

    if checkpoint is None:
        raise DlcvkitError(f"dlcvkit sam needs a local Segment Anything checkpoint: {where_to_get_checkpoints()}")
    done = run_sam(data, out, checkpoint, model_type=model_type.value if model_type else None,
                   points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
                   stability_score_thresh=stability_score_thresh, refine_run=refine_run, weights=weights.value,
                   device=device, overwrite=overwrite)
    counts = done.masks
    print(f"sam: {len(counts)} images, {sum(counts) / len(counts):.1f} masks per image (min {min(counts)}, "
          f"max {max(counts)}), {done.seconds / len(counts):.2f} s per image on {done.device}; outputs in {out}")
    if refine_run is not None:
        labels = data if any(data.glob("*_mask.png")) else "LABELS_DIR"
        print(f"refined: SAM regions changed the class of {100 * done.changed / done.pixels:.2f}% of the pixels; "
              f"compare `dlcvkit eval seg --pred {out / SEGMENTER_DIR} --labels {labels}` with --pred "
              f"{out / REFINED_DIR}")
