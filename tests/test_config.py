from types import SimpleNamespace

import pytest

from dlcvkit.config import Recipe, apply_override, load_recipe, recipe_differences, write_recipe
from dlcvkit.errors import DlcvkitError
from dlcvkit.tasks.classify import ClassifyRecipe
from dlcvkit.tasks.classify import resolve_num_classes as resolve


def _write(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_load_fills_defaults_and_types(tmp_path):
    r = load_recipe(_write(tmp_path, 'task = "classify"\n[optim]\nlr = 1\n[model]\nhead = [64, 32]\n'), ClassifyRecipe)
    assert r.optim.lr == 1.0 and isinstance(r.optim.lr, float)
    assert r.model.head == [64, 32] and r.model.backbone == "resnet18"


def test_unknown_key_lists_valid_keys(tmp_path):
    with pytest.raises(DlcvkitError) as e:
        load_recipe(_write(tmp_path, 'task = "classify"\n[optim]\nlrr = 1\n'), ClassifyRecipe)
    assert "optim.lrr" in str(e.value) and "weight_decay" in str(e.value) and "r.toml" in str(e.value)


def test_wrong_type_and_wrong_choice(tmp_path):
    with pytest.raises(DlcvkitError, match="train.epochs' must be an integer"):
        load_recipe(_write(tmp_path, 'task = "classify"\n[train]\nepochs = "ten"\n'), ClassifyRecipe)
    with pytest.raises(DlcvkitError, match="one of 'cosine'"):
        load_recipe(_write(tmp_path, 'task = "classify"\n[schedule]\ndecay = "linear"\n'), ClassifyRecipe)


def test_recipe_for_another_task_is_refused(tmp_path):
    with pytest.raises(DlcvkitError, match="for task 'segment'"):
        load_recipe(_write(tmp_path, 'task = "segment"\n'), ClassifyRecipe)


def test_overrides_parse_toml_values_and_bare_strings():
    r = ClassifyRecipe()
    for item in ["optim.lr=0.5", "model.head=[8, 4]", "data.train=/some/dir", "train.compile=true", 'task="classify"']:
        apply_override(r, item)
    assert (r.optim.lr, r.model.head, r.data.train, r.train.compile) == (0.5, [8, 4], "/some/dir", True)
    with pytest.raises(DlcvkitError, match="valid keys in \\[data\\]: data.train"):
        apply_override(r, "data.trian=x")
    with pytest.raises(DlcvkitError, match="is a section"):
        apply_override(r, "optim=3")
    with pytest.raises(DlcvkitError, match="KEY=VALUE"):
        apply_override(r, "optim.lr")


def test_written_recipe_round_trips(tmp_path):
    r = ClassifyRecipe()
    apply_override(r, "model.head=[16]")
    apply_override(r, "optim.betas=[0.8, 0.9]")
    write_recipe(r, tmp_path / "recipe.toml")
    again = load_recipe(tmp_path / "recipe.toml", ClassifyRecipe)
    assert again == r
    assert recipe_differences(r, again) == []
    apply_override(again, "optim.lr=0.2")
    assert recipe_differences(r, again) == ["optim.lr"]


def test_base_recipe_accepts_any_task(tmp_path):
    assert load_recipe(_write(tmp_path, 'task = "whatever"\n'), Recipe).task == "whatever"


def test_resolve_takes_num_classes_from_the_training_data_into_a_copy():
    recipe = ClassifyRecipe()
    resolved = resolve(recipe, lambda: SimpleNamespace(num_classes=5))
    assert resolved.model.num_classes == 5
    assert recipe.model.num_classes == 0  # the recipe given is left as it was


def test_resolve_opens_no_data_when_the_recipe_decides_everything():
    recipe = ClassifyRecipe()
    recipe.model.num_classes = 3

    def must_not_open():
        raise AssertionError("the training data was opened")

    assert resolve(recipe, must_not_open) is recipe
    assert resolve(Recipe(), must_not_open) == Recipe()  # no model section at all
