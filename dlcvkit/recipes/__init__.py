"""The shipped recipes, one TOML file per run, read as package data: `--recipe NAME` and `dlcvkit recipes` find
them by name in any install (editable, wheel, or a folder on PYTHONPATH)."""

from __future__ import annotations

import difflib
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from dlcvkit.errors import DlcvkitError

SUFFIX = ".toml"


def names() -> list[str]:
    """The shipped recipes' names (file names without `.toml`), sorted."""
    return sorted(f.name.removesuffix(SUFFIX) for f in files(__name__).iterdir() if f.name.endswith(SUFFIX))


def shipped(name: str) -> Traversable:
    """The shipped recipe called `name`, or a DlcvkitError listing the names closest to it."""
    if name not in names():
        raise DlcvkitError(f"no shipped recipe is called '{name}'{_close_names(name)}; `dlcvkit recipes` lists them")
    return files(__name__) / f"{name}{SUFFIX}"


def find(recipe: Path) -> Path | Traversable:
    """`--recipe` as given: an existing file or folder, else the shipped recipe of that name."""
    if recipe.exists():
        return recipe
    if len(recipe.parts) == 1 and recipe.name in names():
        return shipped(recipe.name)
    raise DlcvkitError(
        f"--recipe {recipe}: no such file, and no shipped recipe has that name{_close_names(str(recipe))}; "
        "`dlcvkit recipes` lists them"
    )


def _close_names(name: str) -> str:
    """"; close names: a, b" for the shipped names most similar to `name` (its stem: `recipes/x.toml` finds x)."""
    close = difflib.get_close_matches(Path(name).stem, names(), n=3)
    return f"; close names: {', '.join(close)}" if close else ""
