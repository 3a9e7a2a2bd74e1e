"""The package's layering, read from the source: no import cycle between dlcvkit modules (imports inside
functions count), the engine imports nothing from the report, tasks, runs or CLI, and tasks/ holds Tasks."""

import ast
from pathlib import Path

import dlcvkit

PACKAGE = Path(dlcvkit.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """The dlcvkit modules `path` imports anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dlcvkit"):
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                      for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dlcvkit")}
    return found & MODULES.keys()


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _cycle_from(start: str) -> list[str] | None:
    """A path of imports from `start` back to itself, if there is one (depth-first)."""
    stack, seen = [(start, [start])], set()
    while stack:
        name, path = stack.pop()
        for dep in GRAPH[name]:
            if dep == start:
                return path + [start]
            if dep not in seen:
                seen.add(dep)
                stack.append((dep, path + [dep]))
    return None


def test_no_module_imports_itself_through_others():
    cycles = [cycle for name in sorted(GRAPH) if (cycle := _cycle_from(name))]
    assert not cycles, " -> ".join(cycles[0])


def test_the_engine_imports_nothing_above_it():
    above = ("dlcvkit.report", "dlcvkit.tasks", "dlcvkit.runs", "dlcvkit.cli", "dlcvkit.demo")
    upward = {name: bad for name, deps in GRAPH.items()
              if name.startswith("dlcvkit.engine") and (bad := sorted(d for d in deps if d.startswith(above)))}
    assert not upward


def test_the_report_reads_run_folders_without_tasks_runs_or_cli():
    assert not {d for d in GRAPH["dlcvkit.report"] if d.startswith(("dlcvkit.tasks", "dlcvkit.runs", "dlcvkit.cli"))}


def test_every_tasks_module_defines_a_task():
    from dlcvkit.engine.task import Task
    from dlcvkit.tasks.registry import TASKS, task_classes

    # besides the registry, the one module that is not a task is the base of the self-supervised methods
    modules = {name for name in MODULES if name.startswith("dlcvkit.tasks.")} - {"dlcvkit.tasks.registry",
                                                                                 "dlcvkit.tasks.ssl"}
    assert modules == {entry.module for entry in TASKS.values()}
    assert all(issubclass(task_classes(name)[1], Task) for name in TASKS)


def test_every_self_supervised_method_is_one_module_on_the_shared_base():
    from dlcvkit.tasks.registry import TASKS, task_classes
    from dlcvkit.tasks.ssl import SslRecipe, SslTask

    methods = {name for name in TASKS if issubclass(task_classes(name)[1], SslTask)}
    assert {"byol"} <= methods
    for name in methods:
        recipe_cls, task_cls = task_classes(name)
        assert issubclass(recipe_cls, SslRecipe) and task_cls.__module__ == recipe_cls.__module__ == TASKS[name].module


def test_the_training_loop_fits_on_one_screen():
    # fit reads top to bottom as the loop (STYLE.md "The training loop is visible"); set-up and end-of-step work
    # are named functions beside it
    fit = next(node for node in ast.parse(MODULES["dlcvkit.engine.loop"].read_text()).body
               if isinstance(node, ast.FunctionDef) and node.name == "fit")
    assert fit.end_lineno - fit.lineno < 80


MAX_MODULE_LINES = 400


def test_no_module_is_over_400_lines():
    lines = {path.relative_to(PACKAGE.parent).as_posix(): len(path.read_text().splitlines())
             for path in MODULES.values()}
    assert {name: count for name, count in lines.items() if count > MAX_MODULE_LINES} == {}


# the benchmarks measure fit and predict several times in one process with different accelerator settings
# (precision, device), and accelerate has no public way to drop its process-wide state between them: these two
# measurement modules reset it, nothing else does
KNOWN_STATE_RESETS = {"dlcvkit.bench.train", "dlcvkit.bench.infer"}


def test_no_module_ships_test_machinery():
    # mocks belong to tests/, not to what a user installs; so do resets of accelerate's private state
    texts = {name: path.read_text() for name, path in MODULES.items()}
    assert not {name for name, text in texts.items() if "unittest" in text}
    assert {name for name, text in texts.items() if "_reset_state" in text} == KNOWN_STATE_RESETS
