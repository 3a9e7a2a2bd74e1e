"""The docs name tests that exist: every `tests/FILE.py::test_name` (or `::test_name`, of the file named last)
in docs/RELIABILITY.md, docs/ARCHITECTURE.md and README.md is a test function of that file."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCS = ("docs/RELIABILITY.md", "docs/ARCHITECTURE.md", "README.md")
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(test_\w+))?")


def _references(text: str) -> list[tuple[str, str]]:
    """(test file, test name) of every reference; a bare `::name` belongs to the file named before it."""
    found, current = [], None
    for match in REFERENCE.finditer(text):
        path, name = match.groups()
        current = path or current
        if name:
            found.append((current, name))
    return found


@pytest.mark.parametrize("doc", DOCS)
def test_every_test_a_document_names_exists(doc):
    missing = [f"{path}::{name}" for path, name in _references((ROOT / doc).read_text())
               if path is None or not (ROOT / path).is_file()
               or not re.search(rf"^\s*def {name}\(", (ROOT / path).read_text(), re.M)]
    assert missing == []
