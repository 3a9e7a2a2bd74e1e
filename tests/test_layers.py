"""Imports point downward: every import of every dlcvkit module, at module level or inside a function, names a
module of its own layer or of a lower one."""

import ast
from pathlib import Path

import dlcvkit

PACKAGE = Path(dlcvkit.__file__).parent

# top to bottom; a module may import its own layer and the ones below it
LAYERS = (
    ("dlcvkit.__main__", "dlcvkit.cli"),
    ("dlcvkit.bench", "dlcvkit.demo"),
    ("dlcvkit.runs",),
    ("dlcvkit.tasks",),
    ("dlcvkit.report",),
    ("dlcvkit.models",),
    ("dlcvkit.engine",),
    ("dlcvkit.viz",),
    ("dlcvkit.data",),
    ("dlcvkit.augment",),
    ("dlcvkit.config", "dlcvkit.recipes", "dlcvkit.outputs", "dlcvkit.diskfull", "dlcvkit.runnames", "dlcvkit.errors",
     "dlcvkit"),
)


def _layer(module: str) -> int:
    """The index in LAYERS of the longest prefix naming `module` (so `dlcvkit` alone is the bottom layer)."""
    matches = [(len(name), i) for i, names in enumerate(LAYERS) for name in names
               if module == name or module.startswith(name + ".")]
    assert matches, f"{module} is in no layer: add its package to LAYERS"
    return max(matches)[1]


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dlcvkit module) of every import in `path`, function level included; `from dlcvkit import x`
    names the module dlcvkit.x."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("dlcvkit"):
            names = [f"dlcvkit.{a.name}" for a in node.names] if node.module == "dlcvkit" else [node.module]
            found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("dlcvkit")]
    return found


def test_every_import_points_to_its_own_layer_or_below():
    upward = [f"{_module(path)} (line {line}) -> {target}"
              for path in sorted(PACKAGE.rglob("*.py")) for line, target in _imports(path)
              if _layer(target) < _layer(_module(path))]
    assert upward == []


def test_the_check_sees_an_upward_import_inside_a_function(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text("def f():\n    from dlcvkit.runs.training import run_training\n")
    (line, target), = _imports(path)
    assert (line, _layer(target)) == (2, 2) and _layer("dlcvkit.data.masks") > _layer("dlcvkit.engine.loop")
