"""`dlcvkit tsne`: the features of a trained classifier in 2-D."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from dlcvkit.cli.classify import CsvOpt, LabelledOpt, LayoutOpt
from dlcvkit.cli.options import INFERENCE, OverwriteOpt, inference, with_options


class Layer(str, Enum):
    penultimate = "penultimate"
    backbone = "backbone"


class Method(str, Enum):
    tsne = "tsne"
    pca = "pca"


@with_options(*INFERENCE)
def tsne(
    run: Annotated[Path, typer.Option("--run", help="Run folder of a classifier (classify, finetune, ...).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write.")],
    data: LabelledOpt = None,
    csv: CsvOpt = None,
    layout: LayoutOpt = "auto",
    layer: Annotated[Layer, typer.Option(
        "--layer", help="penultimate: the last linear layer's input; backbone: the backbone's pooled output."
    )] = Layer.penultimate,
    method: Annotated[Method, typer.Option("--method", help="t-SNE or PCA (scikit-learn).")] = Method.tsne,
    max_samples: Annotated[int, typer.Option("--max-samples", help="Use an evenly spaced subset of at most N "
                                                                   "images (0 = all).")] = 0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of t-SNE / PCA.")] = 0,
    overwrite: OverwriteOpt = False,
    **options,
) -> None:
    """Picture the features of a trained classifier in 2-D (t-SNE or PCA), coloured by class.

    Example: dlcvkit tsne --run runs/ft_C --data office/val --out tsne.png
    """
    from dlcvkit.outputs import check_output_file
    from dlcvkit.runs.load import CLASSIFIERS, data_or_validation
    from dlcvkit.runs.tsne import plot_run_features

    data, note = data_or_validation(run, data, CLASSIFIERS)
    if note:
        typer.echo(f"dlcvkit: note: {note}", err=True)
    check_output_file(out, "--out", overwrite, {"--data": data, "--csv": csv})
    written = plot_run_features(run, data, out, csv=csv, layout=layout, layer=layer.value, method=method.value,
                                max_samples=max_samples, seed=seed, **inference(options))
    typer.echo(f"wrote {written}")
