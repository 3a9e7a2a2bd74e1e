"""Views on the CPU: made chunk by chunk (each image drawing its own parameters; the repeated views of one pipeline
from one call), and kornia's colour jitter compiled on request with the same random draws."""

import kornia.augmentation as K
import pytest
import torch

from dlcvkit.augment import views as views_module
from dlcvkit.augment.views import Views
from dlcvkit.tasks.byol import ByolRecipe, ByolTask, byol_views


def test_cpu_views_are_made_chunk_by_chunk_each_image_with_its_own_draws(monkeypatch):
    monkeypatch.setattr(views_module, "CPU_CHUNK_PIXELS", 3 * 32 * 32)  # 3 images of 32 px per chunk
    views = byol_views("paper", 32)
    images = torch.rand(1, 3, 32, 32).repeat(8, 1, 1, 1)  # 8 copies of one image
    torch.manual_seed(0)
    v1, v2 = views(images)
    torch.manual_seed(0)
    first, second = views.pipelines
    parts = [(first(part), second(part)) for part in images.split(3)]
    assert torch.equal(v1, torch.cat([a for a, _ in parts])) and torch.equal(v2, torch.cat([b for _, b in parts]))
    assert len({tuple(v.flatten()[:64].tolist()) for v in v1}) == 8  # no two copies got the same view


def _compiled(fn) -> bool:
    return hasattr(fn, "_torchdynamo_orig_callable")


def test_the_recipe_key_compiles_only_the_colour_jitter():
    recipe = ByolRecipe()
    recipe.data.img_size, recipe.aug.compile = 32, True
    views = ByolTask(recipe).views
    jitters = [m for m in views.modules() if isinstance(m, K.ColorJitter)]
    blurs = [m for m in views.modules() if isinstance(m, K.RandomGaussianBlur)]
    assert len(jitters) == 2 and all(_compiled(m._hue_fn) and _compiled(m._saturation_fn) for m in jitters)
    assert blurs and not any(_compiled(getattr(m, "_gaussian_blur2d_fn", None)) for m in blurs)
    assert not any(_compiled(m._hue_fn) for m in byol_views("paper", 32).modules() if isinstance(m, K.ColorJitter))


@pytest.mark.slow  # torch.compile: 10-50 s on a 2-core CPU
def test_compiled_colour_jitter_draws_the_same_views():
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    views = []
    for compile in (False, True):
        torch.manual_seed(0)
        views.append(byol_views("paper", 32, compile=compile)(images))
    for eager, compiled in zip(*views):
        torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-5)


def test_repeated_views_of_one_pipeline_come_from_one_call_each_image_drawing_its_own():
    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.calls = []

        def forward(self, images):
            self.calls.append(len(images))
            return images + torch.rand(len(images), 1, 1, 1)

    first, local = Recorder(), Recorder()
    images = torch.rand(1, 3, 8, 8).repeat(4, 1, 1, 1)
    torch.manual_seed(0)
    drawn = Views((1, first), (3, local))(images)
    assert [tuple(v.shape) for v in drawn] == [(4, 3, 8, 8)] * 4 and (first.calls, local.calls) == ([4], [12])
    torch.manual_seed(0)
    plain = images + torch.rand(4, 1, 1, 1)
    locals_ = images.repeat(3, 1, 1, 1) + torch.rand(12, 1, 1, 1)
    assert torch.equal(drawn[0], plain) and all(torch.equal(a, b) for a, b in zip(drawn[1:], locals_.chunk(3)))
    assert len({float(v[i, 0, 0, 0]) for v in drawn[1:] for i in range(4)}) == 12  # every local view its own draw
