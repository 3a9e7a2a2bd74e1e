"""The `dlcvkit` command line: one module per command group, the options they share in `options`, the training
commands made from the task registry (`train`). Each command parses, calls one function and prints.

Errors from bad input arrive as `DlcvkitError` and leave as one line on stderr with exit code 2; `--debug`
(anywhere before a `--`) shows the traceback instead. A training stopped by Ctrl-C (after saving a checkpoint)
exits 130, one stopped by SIGTERM 143. In a multi-process run each line names its process, and a process
that lost contact with a failed one says so in one line (exit 1); see `exit`. Heavy imports (torch, timm)
happen inside commands so that `--help` stays fast.
"""

from __future__ import annotations

import sys

import typer

from dlcvkit.cli.exit import run

app = typer.Typer(
    name="dlcvkit",
    help="Train and evaluate the course's vision systems (BYOL, classification, segmentation) on 1 CPU to N GPUs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


eval_app = typer.Typer(help="Evaluate predictions or trained runs with the course's rules.", no_args_is_help=True)
predict_app = typer.Typer(help="Inference in the course's output formats.", no_args_is_help=True)
viz_app = typer.Typer(help="Pictures: mask overlays and grids.", no_args_is_help=True)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    """dlcvkit: one engine for BYOL pre-training, classification and segmentation."""


def _register() -> None:
    from dlcvkit.cli import (bench, classify, data, demo, export, launch, probe, recipes, report, sam, segment,
                             summary, train)

    train.register(app)
    commands = {
        app: {"tsne": classify.tsne, "summary": summary.summary, "sam": sam.sam, "report": report.report,
              "demo": demo.demo, "export": export.export},
        eval_app: {"cls": classify.eval_cls, "seg": segment.eval_seg, "probe": probe.probe},
        predict_app: {"cls": classify.predict_cls, "seg": segment.predict_seg},
        viz_app: {"mask": segment.viz_mask},
    }
    for group, named in commands.items():
        for name, command in named.items():
            group.command(name)(command)
    app.command("launch", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(launch.launch)
    for name, group in {"data": data.app, "eval": eval_app, "predict": predict_app, "viz": viz_app,
                        "bench": bench.app, "recipes": recipes.app}.items():
        app.add_typer(group, name=name)


_register()


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; exit 2 with one line on stderr for bad input."""
    run(app, sys.argv[1:] if argv is None else argv)
