"""`dlcvkit sam`: Segment Anything's automatic masks on satellite images, and with --refine-run a trained
segmenter's class masks painted over SAM's regions."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlcvkit.cli.common import OverwriteOpt
from dlcvkit.errors import DlcvkitError


class SamType(str, Enum):
    vit_b = "vit_b"
    vit_l = "vit_l"
    vit_h = "vit_h"


def sam(
    checkpoint: Annotated[Optional[Path], typer.Option(
        "--checkpoint", help="A local Segment Anything checkpoint, e.g. sam_vit_b_01ec64.pth.")] = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="Folder of xxxx_sat.jpg.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the outputs.")] = None,
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
    weights: Annotated[str, typer.Option("--weights", help="Of --refine-run: 'best' or 'last'.")] = "best",
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, ... (default: cuda if present).")] = "",
    overwrite: OverwriteOpt = False,
) -> None:
    """Segment Anything's automatic masks for every xxxx_sat.jpg, one image at a time.

    Writes OUT/xxxx_regions.png (each mask in its own colour) and OUT/xxxx_regions.npz (the masks as bits,
    largest first, with their scores).

    With --refine-run also OUT/segmenter/xxxx_mask.png (the run's prediction) and OUT/refined/xxxx_mask.png:
    each SAM region painted with the class the run predicts on most of its pixels, smaller regions over larger
    ones, uncovered pixels left with the run's class. `dlcvkit eval seg` compares the two folders.
    """
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from dlcvkit.data.datasets import SatellitePairs
    from dlcvkit.models.sam import load_sam, where_to_get_checkpoints
    from dlcvkit.outputs import check_output_dir
    from dlcvkit.tasks.sam_refine import REFINED_DIR, SEGMENTER_DIR, load_segmenter, make_generator, sam_image

    if checkpoint is None:
        raise DlcvkitError(f"dlcvkit sam needs a local Segment Anything checkpoint: {where_to_get_checkpoints()}")
    if images is None or out is None:
        raise DlcvkitError("dlcvkit sam needs --checkpoint PATH --images DIR --out DIR")
    check_output_dir(out, "--out", overwrite, {"--images": images, "--refine-run": refine_run,
                                               "--checkpoint": checkpoint})
    dataset = SatellitePairs(images, with_masks=False)
    try:
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise DlcvkitError(f"--device {device}: expected cpu, cuda or cuda:N") from None
    model = load_sam(checkpoint, model_type.value if model_type else None, device)
    generator = make_generator(model, points_per_side, pred_iou_thresh, stability_score_thresh)
    segmenter = load_segmenter(refine_run, weights, device) if refine_run is not None else None

    out.mkdir(parents=True, exist_ok=True)
    counts, seconds, changed, pixels = [], 0.0, 0, 0
    progress = Progress(TextColumn("[bold]sam"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[masks]} masks"), TimeRemainingColumn(), console=Console(stderr=True))
    with progress:
        bar = progress.add_task("sam", total=len(dataset), masks="-")
        for i in range(len(dataset)):
            sample = dataset[i]
            start = time.perf_counter()
            found, changed_here = sam_image(sample["name"], sample["image"], generator, out, segmenter)
            seconds += time.perf_counter() - start
            counts.append(found)
            changed += changed_here
            pixels += sample["image"][0].numel()
            progress.update(bar, advance=1, masks=found)
    print(f"sam: {len(counts)} images, {sum(counts) / len(counts):.1f} masks per image (min {min(counts)}, "
          f"max {max(counts)}), {seconds / len(counts):.2f} s per image on {device}; outputs in {out}")
    if segmenter is not None:
        labels = images if any(images.glob("*_mask.png")) else "LABELS_DIR"
        print(f"refined: SAM regions changed the class of {100 * changed / pixels:.2f}% of the pixels; compare "
              f"`dlcvkit eval seg --pred {out / SEGMENTER_DIR} --labels {labels}` with --pred {out / REFINED_DIR}")
