"""The `dlcvkit` command line: thin Typer commands (parse, load recipe, call), registered below in one list.

Errors from bad input arrive as `DlcvkitError` and leave as one line on stderr with exit code 2; `--debug`
(anywhere before a `--`) shows the traceback instead. Heavy imports (torch, timm) happen inside commands so
that `--help` stays fast.
"""

from __future__ import annotations

import os
import sys

import typer

from dlcvkit.errors import DlcvkitError

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
    from dlcvkit.cli import classify, data, launch

    app.add_typer(data.app, name="data")
    app.add_typer(eval_app, name="eval")
    app.add_typer(predict_app, name="predict")
    app.add_typer(viz_app, name="viz")
    app.command("classify")(classify.classify)
    app.command("launch", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(launch.launch)


_register()


def _pop_debug(args: list[str]) -> bool:
    """Remove every `--debug` before a `--` separator; True if there was one (or DLCVKIT_DEBUG=1)."""
    end = args.index("--") if "--" in args else len(args)
    found = "--debug" in args[:end]
    args[:end] = [a for a in args[:end] if a != "--debug"]
    return found or os.environ.get("DLCVKIT_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; exit 2 with one line on stderr for bad input."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _pop_debug(args)
    try:
        app(args=args, prog_name="dlcvkit")  # standalone: Typer itself reports usage errors (exit 2)
    except DlcvkitError as e:
        if debug:
            raise
        print(f"dlcvkit: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("dlcvkit: interrupted", file=sys.stderr)
        sys.exit(130)
