"""`dlcvkit summary`: the architecture as a layer table, for any timm model, run folder or segmenter."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer


class SummaryTask(str, Enum):
    cls = "cls"
    seg = "seg"


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
    """The architecture as a layer table: output shapes, parameters, total / trainable / non-trainable.

    Example: dlcvkit summary vgg16_bn --input-size 3 32 32
    """
    from dlcvkit.runs.summary import layer_table

    net, table = layer_table(model, task=task.value, num_classes=num_classes, input_size=input_size, depth=depth)
    if print_module:
        typer.echo(str(net))
    typer.echo(table)
