"""`dlcvkit eval probe`: linear-probe and kNN accuracy of a frozen backbone's features."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlcvkit.cli.options import BatchOpt, JsonOpt, OverwriteOpt, ValOpt, WorkersOpt


def probe(
    data: Annotated[Path, typer.Option(
        "--data", help="Office-Home folder (train/ + train.csv, val/ + val.csv), or the training data with --val.")],
    backbone: Annotated[Optional[Path], typer.Option(
        "--backbone", help="Backbone file (BYOL backbone.safetensors, or a supervised one); none = random init.")] = None,
    val: ValOpt = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", help="timm backbone (default: the one a BYOL backbone file records).")] = None,
    img_size: Annotated[int, typer.Option(
        "--img-size", help="Image side (default: the BYOL file's pre-training size, else 128).")] = 0,
    k: Annotated[int, typer.Option("--k", help="Neighbours of the kNN vote.")] = 20,
    batch_size: BatchOpt = 0,
    workers: WorkersOpt = -1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random initialisation (without --backbone).")] = 0,
    json_out: JsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Linear-probe and kNN (k = 20, cosine) validation accuracy of a frozen backbone's features.

    Example: dlcvkit eval probe --backbone runs/byol/backbone.safetensors --data office
    """
    from dlcvkit.outputs import check_output_file
    from dlcvkit.runs.probe import probe_backbone

    if json_out is not None:
        check_output_file(json_out, "--json", overwrite, {"--data": data, "--val": val, "--backbone": backbone})
    result = probe_backbone(data, backbone, val=val, arch=model,
                            img_size=img_size, k=k, batch_size=batch_size, num_workers=workers, seed=seed)
    typer.echo(f"backbone: {result['backbone']} ({result['arch']}, {result['img_size']} px)")
    typer.echo(f"linear probe accuracy: {result['linear_probe_acc']:.4f}")
    typer.echo(f"kNN (k={k}, cosine) accuracy: {result['knn_acc']:.4f}")
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=1) + "\n")
