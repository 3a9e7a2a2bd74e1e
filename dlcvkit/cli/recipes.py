"""`dlcvkit recipes`: the shipped recipes, one line each; `dlcvkit recipes show NAME` prints one to copy and edit."""

from __future__ import annotations

from typing import Annotated

import typer

# What `--data` (and `--val`) of each task's command reads.
DATA = {
    **dict.fromkeys(("byol", "dino", "simclr"), "unlabelled images: a folder (Mini-ImageNet's train/)"),
    "classify": "labelled images: P1 folder ({label}_{i}.png), ImageFolder, or folder + CSV",
    "finetune": "Office-Home: DIR/train/ + DIR/train.csv, DIR/val/ + DIR/val.csv",
    "segment": "folders of xxxx_sat.jpg + xxxx_mask.png",
}

app = typer.Typer(help="The shipped recipes: list them, or print one to copy and edit.",
                  epilog="Example: dlcvkit recipes show demo_seg > my.toml")


@app.callback(invoke_without_command=True)
def recipes(ctx: typer.Context) -> None:
    """List the shipped recipes: name, task, model and image size, and the data `--data` must hold.

    Use one by name (`--recipe demo_seg`), or copy it to edit: `dlcvkit recipes show demo_seg > my.toml`.
    """
    if ctx.invoked_subcommand is not None:
        return
    from dlcvkit.recipes import names

    rows = [(name, *describe(name)) for name in names()]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="A shipped recipe's name, e.g. demo_seg.")]) -> None:
    """Print a shipped recipe as it is (`> my.toml` to edit a copy, then `--recipe my.toml`).

    Example: dlcvkit recipes show demo_seg > my.toml
    """
    from dlcvkit.recipes import shipped

    typer.echo(shipped(name).read_text(), nl=False)


def describe(name: str) -> tuple[str, str, str]:
    """(task, model and image size, data it expects) of a shipped recipe, as its TOML states them (read without
    importing any task, so that listing is instant; a test checks that every shipped recipe states them)."""
    import tomllib

    from dlcvkit.recipes import shipped

    raw = tomllib.loads(shipped(name).read_text())
    model, task = raw.get("model", {}), raw.get("task", "")
    net = "-".join(model[key] for key in ("name", "backbone") if key in model)
    return task, f"{net}, {raw.get('data', {}).get('img_size', '?')} px", DATA.get(task, "")
