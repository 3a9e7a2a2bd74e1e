"""The Task contract as docs/ARCHITECTURE.md shows it: the page quotes tests/example_task.py verbatim, and that
Task trains in this process into a run folder through the engine's hooks alone."""

import json
from pathlib import Path

from dlcvkit.config import load_recipe
from dlcvkit.engine.loop import fit
from dlcvkit.engine.rundir import RUN_MARKER, mark_folder, start_run_dir
from dlcvkit.engine.runlog import end_of_run
from tests.example_task import PointsRecipe, PointsTask

ROOT = Path(__file__).parent.parent
RECIPE = """task = "points"
[data]
batch_size = 8
num_workers = 0
[train]
epochs = 2
tensorboard = false
"""


def test_the_architecture_page_quotes_the_example_task_verbatim():
    page = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    assert f"```python\n{(ROOT / 'tests' / 'example_task.py').read_text()}```" in page


def test_the_example_task_trains_into_a_run_folder(tmp_path):
    # 16 points, labels 0..2 by quadrant band: 3 classes, which the recipe leaves to the data (num_classes = 0)
    rows = [(x, y, (x > 0) + (y > 0)) for x in (-2.0, -1.0, 1.0, 2.0) for y in (-2.0, -1.0, 1.0, 2.0)]
    (tmp_path / "points.csv").write_text("".join(f"{x},{y},{c}\n" for x, y, c in rows))
    (tmp_path / "points.toml").write_text(RECIPE)
    recipe = load_recipe(tmp_path / "points.toml", PointsRecipe, [f'data.train="{tmp_path / "points.csv"}"'])
    task = PointsTask(PointsTask.resolve(recipe))
    assert recipe.model.num_classes == 0 and task.recipe.model.num_classes == 3

    summary = fit(task, tmp_path / "run", max_steps=3)

    run = tmp_path / "run"
    assert (summary["step"], summary["total_steps"], summary["best_metric"]) == (3, 4, "acc")
    assert (run / "classes.txt").read_text() == "3\n"
    assert 'num_classes = 3' in (run / "recipe.toml").read_text()
    evaluations = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "acc" in r]
    assert [r["step"] for r in evaluations] == [2, 3] and all(0 <= r["acc"] <= 1 for r in evaluations)
    assert end_of_run(summary, run, task.run_files)[-1] == (
        f"files in {run}: recipe.toml, metrics.jsonl, checkpoints/, model.safetensors, best.safetensors, "
        "classes.txt, summary.csv")


def test_a_new_run_removes_the_earlier_run_s_task_files_and_keeps_the_user_s(tmp_path):
    mark_folder(tmp_path, ("track", "backbone.safetensors"))  # as the earlier run's Task listed them
    for name in ("track", "classes.txt", "notes.txt", "recipe.toml"):
        (tmp_path / name).write_text("x")
    (tmp_path / RUN_MARKER).write_text((tmp_path / RUN_MARKER).read_text() + "Files of its Task: ../notes.txt .\n")
    start_run_dir(tmp_path, ("classes.txt",))
    assert sorted(p.name for p in tmp_path.iterdir()) == [RUN_MARKER, "notes.txt"]
    assert (tmp_path / RUN_MARKER).read_text().splitlines()[-1] == "Files of its Task: classes.txt"
