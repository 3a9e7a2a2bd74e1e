"""BYOL self-supervised pre-training on unlabeled images; exports the online encoder as `backbone.safetensors`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from dlcvkit.augment.byol import byol_views
from dlcvkit.augment.common import normalize, to_unit
from dlcvkit.config import Recipe
from dlcvkit.data.datasets import UnlabeledFolder
from dlcvkit.engine.ema import EMA
from dlcvkit.engine.task import RunContext, Task
from dlcvkit.engine.weights import save_weights
from dlcvkit.errors import DlcvkitError
from dlcvkit.models.byol import BYOL, build_byol

BACKBONE_FILE = "backbone.safetensors"


@dataclass
class ByolModel:
    backbone: str = "resnet50"  # any timm model name (pooled features are the representation)
    pretrained: str = ""  # "" = random init (BYOL's setting), a local weights file, or "hub"
    projection_hidden: int = 4096  # projector g and predictor q: Linear, BN, ReLU, Linear (paper §3.3)
    projection_dim: int = 256
    prediction_hidden: int = 4096
    tau_base: float = 0.996  # target EMA τ at step 0, rising to 1 by a cosine over the run (§3.2; 0.99 for short runs)


@dataclass
class ByolAug:
    preset: Literal["paper", "paper_gray", "grey", "report", "none"] = "paper"  # see dlcvkit.augment.byol


@dataclass
class ByolRecipe(Recipe):
    task: str = "byol"
    model: ByolModel = field(default_factory=ByolModel)
    aug: ByolAug = field(default_factory=ByolAug)


class ByolTask(Task):
    def __init__(self, recipe: ByolRecipe) -> None:
        super().__init__(recipe)
        self._views = byol_views(recipe.aug.preset, recipe.data.img_size)
        self._train = None

    def build_model(self) -> BYOL:
        m = self.recipe.model
        return build_byol(m.backbone, m.pretrained, m.projection_hidden, m.projection_dim, m.prediction_hidden)

    def train_dataset(self) -> UnlabeledFolder:
        data = self.recipe.data
        if not data.train:
            raise DlcvkitError("no training images: pass --data DIR (a folder of images, e.g. mini/train)")
        if self._train is None:
            self._train = UnlabeledFolder(data.train, size=data.img_size)
        return self._train

    def augment(self, batch: dict) -> dict:
        view1, view2 = self._views(to_unit(batch["image"]))
        return {"view1": normalize(view1), "view2": normalize(view2)}

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return model(batch["view1"], batch["view2"])

    def emas(self, model: BYOL, total_steps: int) -> list[EMA]:
        """The target network ξ ← τξ + (1 − τ)θ after every optimizer step, τ by the cosine schedule over the
        run's optimizer steps; BatchNorm running statistics are averaged like the weights."""
        return [EMA(model.online, model.target, self.recipe.model.tau_base, total_steps, buffers="average")]

    def export(self, model: BYOL, ctx: RunContext) -> None:
        """`backbone.safetensors`: the online encoder only, loadable by `timm.create_model(name, num_classes=0)`."""
        # with the timm name and image size in the file, `dlcvkit eval probe` needs no --arch or --img-size
        metadata = {"backbone": self.recipe.model.backbone, "img_size": str(self.recipe.data.img_size),
                    "byol_step": str(ctx.step)}
        save_weights(model.encoder.state_dict(), ctx.run_dir / BACKBONE_FILE, metadata)
