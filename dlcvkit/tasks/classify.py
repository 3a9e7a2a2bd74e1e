"""Image classification (course P1): a timm backbone with a recipe-defined head, cross-entropy, accuracy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dlcvkit.augment.classify import classification_augment
from dlcvkit.augment.common import normalize, to_unit
from dlcvkit.config import Recipe
from dlcvkit.data.datasets import open_labeled
from dlcvkit.engine.metrics import Confusion, accuracy
from dlcvkit.engine.task import RunContext, Task
from dlcvkit.errors import DlcvkitError
from dlcvkit.models.classifier import build_classifier


@dataclass
class ClassifyModel:
    backbone: str = "resnet18"  # any timm model name
    pretrained: str = ""  # "" = random init, a local weights file, or "hub"
    num_classes: int = 0  # 0 = from the training data
    head: list[int] = field(default_factory=list)  # hidden widths of an MLP head ([] = one linear layer)
    dropout: float = 0.0
    freeze_backbone: bool = False  # train the head only (the backbone also stays in eval mode: BN frozen)


@dataclass
class ClassifyAug:
    preset: Literal["none", "flip", "standard"] = "standard"
    label_smoothing: float = 0.0


@dataclass
class ClassifyRecipe(Recipe):
    task: str = "classify"
    model: ClassifyModel = field(default_factory=ClassifyModel)
    aug: ClassifyAug = field(default_factory=ClassifyAug)


class ClassifyTask(Task):
    best_metric = "acc"

    def __init__(self, recipe: ClassifyRecipe) -> None:
        super().__init__(recipe)
        if not recipe.model.num_classes:  # resolved into the recipe, so RUN_DIR/recipe.toml rebuilds the model
            recipe.model.num_classes = self.train_dataset().num_classes
        self.num_classes = recipe.model.num_classes
        self._augment = classification_augment(recipe.aug.preset, recipe.data.img_size)

    def build_model(self) -> nn.Module:
        m = self.recipe.model
        return build_classifier(m.backbone, self.num_classes, m.head, m.dropout, m.pretrained, m.freeze_backbone)

    def train_dataset(self):
        data = self.recipe.data
        if not data.train:
            raise DlcvkitError("no training data: pass --data DIR (or set data.train in the recipe)")
        if getattr(self, "_train", None) is None:
            self._train = open_labeled(data.train, size=data.img_size, layout=data.layout,
                                       num_classes=self.recipe.model.num_classes or None)
        return self._train

    def val_dataset(self):
        data = self.recipe.data
        if not data.val:
            return None
        return open_labeled(data.val, size=data.img_size, layout=data.layout, num_classes=self.num_classes)

    def augment(self, batch: dict) -> dict:
        return batch | {"image": normalize(self._augment(to_unit(batch["image"])))}

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        return F.cross_entropy(model(batch["image"]), batch["label"], label_smoothing=self.recipe.aug.label_smoothing)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches, ctx: RunContext) -> dict[str, float]:
        confusion = Confusion(self.num_classes, ctx.accelerator.device)
        for batch in batches:
            logits = model(normalize(to_unit(batch["image"])))
            confusion.update(logits.argmax(dim=1), batch["label"])
        return {"acc": accuracy(confusion.reduce(ctx.accelerator))}
