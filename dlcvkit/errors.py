"""The project's one exception type: bad input, reported by the CLI as one line and exit code 2; and the
suggestion of the right names for a misspelt one."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DlcvkitError(Exception):
    """A problem with the user's input (file, option, recipe) that the message explains."""


def first_line(error: Exception) -> str:
    """The first line of an exception's message (libraries' messages run over many lines), else its type."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def closest(name: str, names: Iterable[str], n: int = 8) -> list[str]:
    """The `n` names most similar to a misspelt `name`, most similar first (none that are not similar)."""
    return difflib.get_close_matches(name, list(names), n=n, cutoff=0.6)


def did_you_mean(name: str, names: Iterable[str], prefix: str = "") -> str:
    """" (did you mean 'PREFIXx'?)" for the name x most similar to `name`, or "" when none is."""
    found = closest(name, names, n=1)
    return f" (did you mean '{prefix}{found[0]}'?)" if found else ""
