"""The `dlcvkit` command line: one module per command group, the options they share in `options`, the training
commands made from the task registry (`train`, fine-tuning's own options in `finetune`). Each command parses,
calls one function and prints.

Errors from bad input arrive as `DlcvkitError` and leave as one line on stderr with exit code 2; `--debug`
(anywhere before a `--`) shows the traceback instead. A training stopped by Ctrl-C (after saving a checkpoint)
exits 130, one stopped by SIGTERM 143. In a multi-process run each line names its process, and a process
that lost contact with a failed one says so in one line (exit 1); see `exit`. Heavy imports (torch, timm)
happen inside commands so that `--help` stays fast. Every command's help ends with an example.
"""

from __future__ import annotations

import sys

import typer

from dlcvkit.cli.exit import run
from dlcvkit.cli.options import renamed

HELP = ["-h", "--help"]
app = typer.Typer(
    name="dlcvkit",
    help="Train and evaluate vision systems (self-supervised BYOL, DINO, SimCLR; classification; segmentation) on "
         "1 CPU to N GPUs.",
    epilog="Example: dlcvkit demo --quick --out demo_out",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # subcommands inherit both: -h, and the old option spellings read as the new ones
    context_settings={"help_option_names": HELP, "token_normalize_func": renamed},
)


eval_app = typer.Typer(help="Evaluate predictions or trained runs with the course's rules.", no_args_is_help=True,
                       epilog="Example: dlcvkit eval seg --run runs/fcn8s")
predict_app = typer.Typer(help="Inference in the course's output formats.", no_args_is_help=True,
                          epilog="Example: dlcvkit predict seg --run runs/fcn8s --data p2/validation --out masks")
viz_app = typer.Typer(help="Pictures: mask overlays and grids.", no_args_is_help=True,
                      epilog="Example: dlcvkit viz mask --image 0008_sat.jpg --mask 0008_mask.png --out overlay.png")


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    """dlcvkit: one engine for BYOL pre-training, classification and segmentation."""


def _register() -> None:
    from dlcvkit.cli import (bench, classify, data, demo, export, launch, probe, recipes, report, sam, segment,
                             summary, train, tsne, viz)

    train.register(app)
    commands = {
        app: {"tsne": tsne.tsne, "summary": summary.summary, "sam": sam.sam, "report": report.report,
              "demo": demo.demo, "export": export.export},
        eval_app: {"cls": classify.eval_cls, "seg": segment.eval_seg, "probe": probe.probe},
        predict_app: {"cls": classify.predict_cls, "seg": segment.predict_seg},
        viz_app: {"mask": viz.viz_mask},
    }
    for group, named in commands.items():
        for name, command in named.items():
            group.command(name)(command)
    app.command("launch", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(launch.launch)
    for name, group in {"data": data.app, "eval": eval_app, "predict": predict_app, "viz": viz_app,
                        "bench": bench.app, "recipes": recipes.app}.items():
        app.add_typer(group, name=name)


_register()


def click_command():
    """The app as one Click command, its boolean flags shown bare in --help (Typer's rich help writes `<bool>`
    after a flag as if it took a value)."""
    root = typer.main.get_command(app)
    groups = [root]
    while groups:
        group = groups.pop()
        groups += getattr(group, "commands", {}).values()
        for param in group.get_params(group.context_class(group, help_option_names=HELP)):  # with --help
            if getattr(param, "is_bool_flag", False):
                param.metavar = ""
    return root


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; exit 2 with one line on stderr for bad input."""
    run(click_command(), sys.argv[1:] if argv is None else argv)
