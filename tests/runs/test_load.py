"""A finished run from its folder: the weights file `--weights` names, and a model built without reading (or
changing) the recipe's pre-trained source."""

import pytest
import torch

from dlcvkit.config import write_recipe
from dlcvkit.engine.weights import save_weights
from dlcvkit.errors import DlcvkitError
from dlcvkit.runs.load import load_run, run_weights
from dlcvkit.tasks.classify import ClassifyRecipe, ClassifyTask


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
