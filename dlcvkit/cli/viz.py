"""`dlcvkit viz ...`: pictures of masks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dlcvkit.cli.options import OverwriteOpt
from dlcvkit.cli.segment import MaskFormatOpt, RedOpt, mask_format_value


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
    """The image tinted with its mask's class colours, class boundaries drawn (the course's mask viewer).

    Example: dlcvkit viz mask --image p2/validation/0008_sat.jpg --mask pred_masks/0008_mask.png --out overlay.png
    """
    from dlcvkit.outputs import check_output_file
    from dlcvkit.viz.masks import write_overlay

    check_output_file(out, "--out", overwrite, {"--image": image, "--mask": mask})
    write_overlay(image, mask, out, alpha, width, red_as, mask_format_value(mask_format) or "colour")
