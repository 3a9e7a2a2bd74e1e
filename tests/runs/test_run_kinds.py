"""A run folder given to a command of another task is named as what it is (a segment run, made by `dlcvkit
segment`) with the commands that take it, instead of failing on the first recipe key the command does not know.
Run folders here hold only the recipe.toml each task writes: every check comes before weights or data are read."""

import itertools

import pytest

from dlcvkit.config import write_recipe
from dlcvkit.runs.load import USED_BY
from dlcvkit.tasks.registry import TASKS, task_classes
from tests.cli_runner import dlcvkit_here

KINDS = tuple(TASKS)  # classify, segment, byol, finetune


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{task: a folder holding the recipe.toml of a run of that task}."""
    root = tmp_path_factory.mktemp("kinds")
    folders = {}
    for kind in KINDS:
        folders[kind] = root / f"{kind}_run"
        folders[kind].mkdir()
        write_recipe(task_classes(kind)[0](), folders[kind] / "recipe.toml")
    (root / "images").mkdir()
    return folders


@pytest.mark.parametrize("command, kind", [(c, k) for c, k in itertools.product(KINDS, KINDS) if c != k])
def test_resume_with_the_command_of_another_task_names_the_runs_task(runs, capsys, command, kind):
    run = runs[kind]
    before = sorted(p.name for p in run.iterdir())
    code, _, err = dlcvkit_here(capsys, command, "--resume", run)
    assert code == 2 and err.splitlines() == [
        f"dlcvkit: error: --resume {run} is a {kind} run (made by `dlcvkit {kind}`), not a {command} run; continue it "
        f"with `dlcvkit {kind} --resume {run}`"]
    assert sorted(p.name for p in run.iterdir()) == before


@pytest.mark.parametrize("command, kind", [("classify", "segment"), ("segment", "byol"), ("byol", "finetune"),
                                           ("finetune", "segment")])
def test_a_run_of_another_task_as_recipe_names_its_task(runs, capsys, tmp_path, command, kind):
    code, _, err = dlcvkit_here(capsys, command, "-r", runs[kind], "--data", tmp_path, "--out", tmp_path / "run")
    assert code == 2 and err.splitlines() == [
        f"dlcvkit: error: recipe {runs[kind] / 'recipe.toml'} is for task '{kind}', not '{command}'"]
    assert not (tmp_path / "run").exists()


CLASSIFIERS = "classify or finetune"
# (command line with RUN, IMAGES and OUT for the run, a folder of images and an output, the tasks it takes)
COMMANDS = [
    (("eval", "cls", "--run", "RUN"), CLASSIFIERS),
    (("eval", "cls", "--run", "RUN", "--data", "IMAGES"), CLASSIFIERS),
    (("predict", "cls", "--run", "RUN", "--data", "IMAGES", "--out", "OUT/p.csv"), CLASSIFIERS),
    (("tsne", "--run", "RUN", "--data", "IMAGES", "--out", "OUT/t.png"), CLASSIFIERS),
    (("eval", "seg", "--run", "RUN"), "segment"),
    (("eval", "seg", "--run", "RUN", "--data", "IMAGES"), "segment"),
    (("predict", "seg", "--run", "RUN", "--data", "IMAGES", "--out", "OUT/masks"), "segment"),
    (("export", "--run", "RUN", "--out", "OUT/m.onnx"), "classify, finetune or segment"),
]


@pytest.mark.parametrize("args, takes, kind", [(a, t, k) for a, t in COMMANDS for k in KINDS if k not in t])
def test_a_command_given_a_run_of_another_task_names_its_task(runs, capsys, tmp_path, args, takes, kind):
    if args[0] == "export":
        pytest.importorskip("onnx")
    values = {"RUN": runs[kind], "IMAGES": runs[kind].parent / "images"}
    argv = [values.get(a, a.replace("OUT", str(tmp_path / "out"))) for a in args]
    code, _, err = dlcvkit_here(capsys, *argv)
    assert code == 2 and err.splitlines() == [
        f"dlcvkit: error: --run {runs[kind]} is a {kind} run (made by `dlcvkit {kind}`), not a {takes} run; a {kind} "
        f"run is used by {USED_BY[kind]}"]
    assert not (tmp_path / "out").exists()
