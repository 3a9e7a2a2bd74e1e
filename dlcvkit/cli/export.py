"""`dlcvkit export`: a trained classifier or segmenter as a model file that serves without dlcvkit (ONNX)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from dlcvkit.cli.options import OverwriteOpt, Weights, WeightsOpt


class Format(str, Enum):
    onnx = "onnx"


def export(
    run: Annotated[Path, typer.Option("--run", help="A finished classifier (classify, finetune) or segmentation run.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The model file to write, e.g. model.onnx.")],
    format_: Annotated[Format, typer.Option("--format", help="onnx (onnxruntime, TensorRT, OpenVINO, ...).")]
    = Format.onnx,
    weights: WeightsOpt = Weights.best,
    overwrite: OverwriteOpt = False,
) -> None:
    """Export a run's model with its input normalisation inside: float RGB pixels 0..255 in, logits out.

    The export is checked with onnxruntime against PyTorch on sample inputs (every dynamic axis) before it is
    written; task, img_size and classes travel as ONNX metadata, so `dlcvkit predict cls|seg --onnx FILE`
    needs no run folder. Its sha256 goes beside it (FILE.sha256): `--onnx` refuses a file that does not match.

    Example: dlcvkit export --run runs/fcn8s --format onnx --out fcn8s.onnx
    """
    from dlcvkit.runs.export import export_onnx
    from dlcvkit.runs.onnx_file import checksum_file

    metadata, shapes, difference = export_onnx(run, out, weights.value, overwrite)
    typer.echo(f"wrote {out}: {metadata['task']}, {metadata['classes']} classes, trained at {metadata['img_size']} px; "
               f"its sha256 in {checksum_file(out)}")
    typer.echo(f"onnxruntime vs PyTorch on inputs {', '.join('x'.join(map(str, s)) for s in shapes)}: "
               f"max abs difference {difference:.2e}")
