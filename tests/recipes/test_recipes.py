"""The recipes ship inside the package: `--recipe NAME`, `dlcvkit recipes`, `dlcvkit recipes show NAME`, close names
for a wrong one, and the demo finding its recipes in the package (not in a checkout next to it)."""

from pathlib import Path

import pytest
import tomllib

import dlcvkit
import dlcvkit.demo
from dlcvkit.config import load_recipe
from dlcvkit.recipes import names, shipped
from dlcvkit.tasks.registry import task_classes
from dlcvkit.tasks.segment import SegmentRecipe
from tests.cli_runner import dlcvkit_here

PACKAGE_RECIPES = Path(dlcvkit.__file__).parent / "recipes"
FILES = sorted(p.stem for p in PACKAGE_RECIPES.glob("*.toml"))


def test_every_toml_of_the_package_is_a_shipped_recipe():
    assert names() == FILES and len(FILES) == 25
    assert not (PACKAGE_RECIPES.parents[1] / "recipes").exists()  # one source of truth: no copy beside the package


@pytest.mark.parametrize("name", FILES)
def test_a_shipped_recipe_loads_by_name_from_any_folder_and_states_what_the_listing_shows(name, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)  # no recipes/ folder here
    raw = tomllib.loads((PACKAGE_RECIPES / f"{name}.toml").read_text())
    recipe = load_recipe(name, task_classes(raw["task"])[0])
    assert recipe.task == raw["task"] and recipe.data.img_size == raw["data"]["img_size"]
    assert recipe.model.backbone == raw["model"]["backbone"]
    assert raw["task"] != "segment" or recipe.model.name == raw["model"]["name"]


def test_recipes_lists_one_line_each_with_task_model_size_and_data(capsys):
    code, out, err = dlcvkit_here(capsys, "recipes")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == FILES
    seg = next(line for line in lines if line.startswith("seg_fcn32s_vgg16 "))
    assert seg.split()[1:4] == ["segment", "fcn32s-vgg16,", "512"] and seg.endswith("xxxx_sat.jpg + xxxx_mask.png")
    cls = next(line for line in lines if line.startswith("cls_p1_vgg16bn "))
    assert cls.split()[1:4] == ["classify", "vgg16_bn,", "32"] and "P1 folder" in cls


def test_recipes_show_prints_the_file_and_the_copy_runs_as_the_original(capsys, tmp_path):
    code, out, _ = dlcvkit_here(capsys, "recipes", "show", "demo_seg")
    assert code == 0 and out == (PACKAGE_RECIPES / "demo_seg.toml").read_text()
    (tmp_path / "my.toml").write_text(out.replace("img_size = 64", "img_size = 96"))
    copy, original = load_recipe(tmp_path / "my.toml", SegmentRecipe), load_recipe("demo_seg", SegmentRecipe)
    assert copy.data.img_size == 96 and original.data.img_size == 64
    copy.data.img_size = 64
    assert copy == original


def test_a_file_of_that_name_wins_over_the_shipped_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("demo_seg").write_text('task = "segment"\n[data]\nimg_size = 32\n')
    assert load_recipe("demo_seg", SegmentRecipe).data.img_size == 32
    assert load_recipe(shipped("demo_seg"), SegmentRecipe).data.img_size == 64


@pytest.mark.parametrize("given, close", [("demo_sge", "demo_seg"),
                                          ("recipes/seg_fcn8s_vgg16.toml", "seg_fcn8s_vgg16")])
def test_an_unknown_recipe_is_one_line_listing_the_close_names(capsys, tmp_path, given, close):
    code, out, err = dlcvkit_here(capsys, "segment", "--recipe", given, "--data", tmp_path, "--out", tmp_path / "run")
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith(f"dlcvkit: error: --recipe {given}: no such file")
    assert f"close names: {close}" in err
    assert not (tmp_path / "run").exists()


def test_recipes_show_of_an_unknown_name(capsys):
    code, out, err = dlcvkit_here(capsys, "recipes", "show", "demo_sge")
    assert code == 2 and out == ""
    assert err == ("dlcvkit: error: no shipped recipe is called 'demo_sge'; close names: demo_seg, demo_cls, "
                   "demo_simclr; `dlcvkit recipes` lists them\n")


def test_the_demo_takes_every_recipe_from_the_package(tmp_path, monkeypatch):
    """The demo's commands, recorded instead of run, from a folder with no checkout around it."""
    recipes = []

    def record(demo, title, *args, **kwargs):
        args = [str(a) for a in args]
        if "-r" in args:
            recipes.append(Path(args[args.index("-r") + 1]))

    monkeypatch.setattr(dlcvkit.demo.Demo, "cli", record)
    monkeypatch.setattr(dlcvkit.demo, "demo_blocks", lambda demo: [])
    monkeypatch.setattr(dlcvkit.demo, "write_report", lambda blocks, out: None)
    monkeypatch.chdir(tmp_path)
    dlcvkit.demo.run_demo(tmp_path / "out", lambda args: None, quick=True)
    assert sorted({p.name for p in recipes}) == ["demo_byol.toml", "demo_cls.toml", "demo_finetune.toml",
                                                  "demo_seg.toml"]
    assert all(p.parent == PACKAGE_RECIPES and p.is_file() for p in recipes)
