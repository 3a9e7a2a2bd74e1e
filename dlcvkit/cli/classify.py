"""Classification commands on finished runs: `eval cls` and `predict cls` (one run or an ensemble)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlcvkit.cli.options import (INFERENCE, PREDICTION, JsonOpt, OverwriteOpt, SkipBadOpt, inference, prediction,
                                 with_options)

RunsOpt = Annotated[list[Path], typer.Option("--run", help="Run folder; repeat for an ensemble (mean of softmax).")]
LabelledOpt = Annotated[
    Optional[Path], typer.Option("--data", help="Labelled images: P1 folder, ImageFolder, or folder + --csv "
                                                "(default: the (first) run's validation data, data.val).")
]
CsvOpt = Annotated[
    Optional[Path], typer.Option("--csv", help="Images CSV (id,filename,label) naming the files of the folder.")
]
LayoutOpt = Annotated[str, typer.Option("--layout", help="Data layout: auto, p1, csv or imagefolder.")]


@with_options(*INFERENCE)
def eval_cls(
    run: RunsOpt,
    data: LabelledOpt = None,
    csv: CsvOpt = None,
    layout: LayoutOpt = "auto",
    json_out: JsonOpt = None,
    confusion: Annotated[
        Optional[Path], typer.Option("--confusion", help="Write the confusion matrix as a PNG.")
    ] = None,
    skip_bad: SkipBadOpt = False,
    overwrite: OverwriteOpt = False,
    **options,
) -> None:
    """Accuracy and per-class accuracy of a run, or of an ensemble of runs (mean of softmax probabilities).

    Runs under `dlcvkit launch` too: every image is counted once, and N processes print what 1 prints.

    Example: dlcvkit eval cls --run runs/vgg16bn --run runs/r50 --data val_50 --json ensemble.json
    """
    from dlcvkit.outputs import check_output_file
    from dlcvkit.runs.classify import evaluate_runs
    from dlcvkit.runs.load import CLASSIFIERS, data_or_validation

    data, note = data_or_validation(run[0], data, CLASSIFIERS)

    for option, path in (("--json", json_out), ("--confusion", confusion)):
        if path is not None:
            check_output_file(path, option, overwrite, {"--data": data, "--csv": csv})
    result = evaluate_runs(run, data, csv=csv, layout=layout, skip_bad=skip_bad, **inference(options))
    if result is None:  # not the main process
        return
    if note:
        typer.echo(f"dlcvkit: note: {note}", err=True)
    _print_evaluation(result)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=1) + "\n")
    if confusion is not None:
        from dlcvkit.viz.confusion import plot_confusion

        typer.echo(f"confusion matrix: {plot_confusion(result['confusion'], confusion)}")


@with_options(*PREDICTION)
def predict_cls(
    data: Annotated[Path, typer.Option("--data", help="Folder of the images to classify.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output CSV of predictions.")],
    run: RunsOpt = None,
    csv: Annotated[
        Optional[Path], typer.Option("--csv", help="Images CSV (id,filename[,label]): output id,filename,label "
                                                   "in its row order; without it filename,label sorted by name.")
    ] = None,
    **options,
) -> None:
    """Predict a class for every image, in the course's CSV format (one run, an ensemble, or an ONNX export).

    Images of any size are read at the run's `data.img_size`.

    Example: dlcvkit predict cls --run runs/ft_C --csv office/val.csv --data office/val --out pred.csv
    """
    from dlcvkit.runs.classify import predict_runs

    written = predict_runs(run, data, out, csv=csv, onnx=options["onnx"], **prediction(options))
    if written is not None:
        typer.echo(f"wrote {written} predictions to {out}")


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
