"""A finished run from its folder: the weights file `--weights` names, a model built without reading (or
changing) the recipe's pre-trained source, and the validation data its recipe names for `--run` alone."""

import shutil
import tomllib

import pytest
import tomli_w
import torch

from dlcvkit.config import write_recipe
from dlcvkit.engine.weights import save_weights
from dlcvkit.errors import DlcvkitError
from dlcvkit.runs.load import load_run, run_weights
from dlcvkit.tasks.classify import ClassifyRecipe, ClassifyTask
from tests.cli_runner import dlcvkit_here


@pytest.fixture
def run(tmp_path):
    """A classify run folder whose recipe names a pre-trained file that no longer exists, with its last weights
    (zeros) and its model EMA's (ones)."""
    recipe = ClassifyRecipe()
    recipe.data.img_size = 32
    recipe.model.backbone, recipe.model.num_classes, recipe.model.pretrained = "test_resnet", 3, "/gone/r.pth"
    write_recipe(recipe, tmp_path / "recipe.toml")
    recipe.model.pretrained = ""
    model = ClassifyTask(recipe).build_model()
    save_weights({k: torch.zeros_like(v) for k, v in model.state_dict().items()}, tmp_path / "model.safetensors")
    save_weights({k: torch.ones_like(v) for k, v in model.state_dict().items()}, tmp_path / "ema.safetensors")
    return tmp_path


def test_weights_best_falls_back_to_the_last_and_ema_is_the_model_ema(run):
    assert run_weights(run, "best") == run / "model.safetensors"
    assert run_weights(run, "last") == run / "model.safetensors"
    assert run_weights(run, "ema") == run / "ema.safetensors"
    (run / "best.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    assert run_weights(run, "best") == run / "best.safetensors"


def test_weights_ema_of_a_run_without_model_ema_names_the_option_and_the_key(run):
    (run / "ema.safetensors").unlink()
    with pytest.raises(DlcvkitError, match=r"--weights ema: .*ema.safetensors does not exist .*train.model_ema"):
        run_weights(run, "ema")


def test_load_run_builds_from_random_init_and_leaves_the_recipe_as_the_run_wrote_it(run):
    recipe, task, model = load_run(run, "ema")
    assert recipe.model.pretrained == "/gone/r.pth"  # not read (it does not exist), not blanked either
    assert all(bool((p == 1).all()) for p in model.state_dict().values() if p.is_floating_point())
    assert not model.training


# ------------------------------------------------------------------ --run without --data: the run's data.val


@pytest.fixture(scope="module")
def runs_with_val(tmp_path_factory, synth_data):
    """A segmentation and a classification run folder (random weights) whose recipes name their validation data,
    and that data: 3 P2 tiles and 6 P1 images."""
    from dlcvkit.data.synth import synth_cls
    from dlcvkit.tasks.segment import SegmentRecipe, SegmentTask

    root = tmp_path_factory.mktemp("val_default")
    shutil.copytree(synth_data("seg", n=3, size=32), root / "seg_val")
    synth_cls(root / "cls_val", n=6, size=32, classes=2)
    for name, recipe, task, val in (("seg", SegmentRecipe(), SegmentTask, "seg_val"),
                                    ("cls", ClassifyRecipe(), ClassifyTask, "cls_val")):
        recipe.model.backbone, recipe.data.img_size, recipe.data.num_workers = "test_resnet", 32, 0
        recipe.data.val = str(root / val)
        if name == "seg":
            recipe.model.name, recipe.model.fcn_width = "fcn8s", 8
        else:
            recipe.model.num_classes = 2
        (root / name).mkdir()
        write_recipe(recipe, root / name / "recipe.toml")
        save_weights(task(recipe).build_model().state_dict(), root / name / "model.safetensors")
    return root


@pytest.mark.parametrize("command, run, val", [(("eval", "seg"), "seg", "seg_val"), (("eval", "cls"), "cls", "cls_val")])
def test_eval_with_run_alone_uses_the_recipes_validation_data_and_says_so(runs_with_val, capsys, command, run, val):
    root = runs_with_val
    code, given, err = dlcvkit_here(capsys, *command, "--run", root / run, "--data", root / val)
    assert code == 0 and err == ""
    code, default, err = dlcvkit_here(capsys, *command, "--run", root / run)
    assert code == 0 and default == given and ("mean_iou: " in given or "accuracy: " in given)
    assert err == (f"dlcvkit: note: --data {root / val}: the validation data of --run {root / run} "
                   "(data.val of its recipe)\n")


def test_a_run_without_validation_data_asks_for_data(runs_with_val, tmp_path, capsys):
    recipe = tomllib.loads((runs_with_val / "seg" / "recipe.toml").read_text())
    shutil.copytree(runs_with_val / "seg", tmp_path / "seg")
    for val, says in (("", "its recipe names no validation data (data.val); pass --data DIR"),
                      (str(tmp_path / "moved"), f"its validation data {tmp_path / 'moved'} (data.val of its recipe."
                                                "toml) is not there from this folder; pass --data DIR")):
        recipe["data"]["val"] = val
        (tmp_path / "seg" / "recipe.toml").write_text(tomli_w.dumps(recipe))
        code, out, err = dlcvkit_here(capsys, "eval", "seg", "--run", tmp_path / "seg")
        assert (code, out) == (2, "") and err == f"dlcvkit: error: --run {tmp_path / 'seg'}: {says}\n"
