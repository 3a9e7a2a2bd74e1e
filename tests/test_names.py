"""The names of a run folder's files are spelled in one module, dlcvkit/runnames.py: every other module of the
package reaches them through its constants, so that renaming one is a change of one line."""

import ast
from pathlib import Path

import dlcvkit
from dlcvkit import runnames
from dlcvkit.engine.rundir import RUN_FILES

PACKAGE = Path(dlcvkit.__file__).parent
HOME = PACKAGE / "runnames.py"
# spelled elsewhere with another meaning: the trackers of `train.trackers` are named like their folders, and
# "report" is also a command's name
OTHER_MEANINGS = {"tensorboard", "wandb", "report"}
NAMES = {v for k, v in vars(runnames).items() if k.isupper() and isinstance(v, str)} - OTHER_MEANINGS


def _spelled(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant in `path` that is a run-folder name or a path under checkpoints/,
    f-string parts included."""
    return sorted((node.lineno, node.value) for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and (node.value in NAMES or node.value.startswith(f"{runnames.CHECKPOINTS_DIR}/")))


def test_no_module_but_runnames_spells_a_run_folder_name():
    spelled = [f"{path.relative_to(PACKAGE.parent)}:{line} {text!r}"
               for path in sorted(PACKAGE.rglob("*.py")) if path != HOME for line, text in _spelled(path)]
    assert spelled == []


def test_the_check_sees_a_name_in_an_expression_an_f_string_and_a_path_under_checkpoints(tmp_path):
    path = tmp_path / "probe.py"
    path.write_text('a = run_dir / "model.safetensors"\nb = f"{run_dir / \'metrics.jsonl\'}"\n'
                    'c = "checkpoints/latest"\nd = "the recipe.toml of a run"\n')
    assert _spelled(path) == [(1, "model.safetensors"), (2, "metrics.jsonl"), (3, "checkpoints/latest")]
    assert {"recipe.toml", "latest", ".dlcvkit-run", "backbone.safetensors", "curves.png"} <= NAMES


def test_the_names_a_restart_removes_are_as_before():
    assert RUN_FILES == ("recipe.toml", "metrics.jsonl", "checkpoints", "tensorboard", "model.safetensors",
                         "best.safetensors", "ema.safetensors", "summary.csv", "mlruns", "wandb", "trackers.json",
                         "report.md",
                         "report.html", "curves.png")
