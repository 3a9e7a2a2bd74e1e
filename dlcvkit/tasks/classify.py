"""Image classification (course P1): a timm backbone with a recipe-defined head, cross-entropy (label smoothing,
optional mixup/cutmix), accuracy and per-class accuracy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from dlcvkit.augment.classify import classification_augment, mixup_cutmix
from dlcvkit.augment.common import normalize, to_unit
from dlcvkit.config import Recipe
from dlcvkit.data.labeled import open_labeled
from dlcvkit.data.samples import classes_from_labels
from dlcvkit.engine.metrics import Confusion, accuracy, per_class_accuracy
from dlcvkit.engine.task import RunContext, Task
from dlcvkit.errors import DlcvkitError
from dlcvkit.models.classifier import build_classifier


@dataclass
class ClassifyModel:
    backbone: str = "resnet18"  # any timm model name
    pretrained: str = ""  # "" = random init, a local weights file, or "hub"
    num_classes: int = 0  # 0 = from the training data
    head: list[int] = field(default_factory=list)  # hidden widths of an MLP head ([] = one linear layer)
    dropout: float = 0.0  # after each hidden layer of an MLP head; before the layer of a linear head
    pool: Literal["backbone", "grid"] = "backbone"  # backbone: timm's pooled features; grid: see `grid`
    grid: int = 7  # pool = "grid": last feature map pooled to grid x grid, flattened (VGG16: 512*7*7 = 25088)
    small_images: Literal["none", "upsample", "stem"] = "none"  # upsample to input_size, or stride-1 stem
    input_size: int = 224  # small_images = "upsample": the side the model resizes its inputs to
    freeze_backbone: bool = False  # train the head only (the backbone also stays in eval mode: BN frozen)


@dataclass
class ClassifyAug:
    preset: Literal["none", "flip", "standard", "affine"] = "standard"  # see dlcvkit.augment.classify
    label_smoothing: float = 0.0
    mixup: float = 0.0  # mixup's Beta(α, α) parameter (0 = off); Zhang et al. 2018 use 0.2–0.4 on ImageNet
    cutmix: float = 0.0  # cutmix's α (0 = off); Yun et al. 2019 use 1.0
    mix_prob: float = 1.0  # probability that a batch is mixed at all
    switch_prob: float = 0.5  # with both on: probability of cutmix rather than mixup for a batch


@dataclass
class ClassifyRecipe(Recipe):
    task: str = "classify"
    model: ClassifyModel = field(default_factory=ClassifyModel)
    aug: ClassifyAug = field(default_factory=ClassifyAug)


def classifier_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits (b C) of a uint8 image batch (b 3 h w), normalised as in training."""
    return model(normalize(to_unit(images)))


class ClassifyTask(Task):
    best_metric = "acc"

    def __init__(self, recipe: ClassifyRecipe) -> None:
        """`recipe.model.num_classes` must be set: `resolve` takes it from the training data."""
        super().__init__(recipe)
        self.num_classes = recipe.model.num_classes
        aug = recipe.aug
        self._augment = classification_augment(aug.preset, recipe.data.img_size)
        self._mix = mixup_cutmix(aug.mixup, aug.cutmix, aug.mix_prob, aug.switch_prob, aug.label_smoothing,
                                 self.num_classes)

    def build_model(self) -> nn.Module:
        return self.classifier(self.recipe.model)

    def classifier(self, m: ClassifyModel) -> nn.Module:
        """The classifier the model section `m` describes."""
        return build_classifier(m.backbone, self.num_classes, m.head, m.dropout, m.pretrained, m.freeze_backbone,
                                pool=m.pool, grid=m.grid, small_images=m.small_images, input_size=m.input_size)

    @classmethod
    def resolve(cls, recipe: ClassifyRecipe) -> ClassifyRecipe:
        """`model.num_classes` 0 becomes the training set's number of classes."""
        return resolve_num_classes(recipe, lambda: cls.open_train(recipe))

    @classmethod
    def open_train(cls, recipe: ClassifyRecipe):
        """The labelled training set of `recipe.data` (its labels checked against `model.num_classes` if set, else
        for gaps: the classes are then 0..C-1, each present)."""
        data = recipe.data
        if not data.train:
            raise DlcvkitError("no training data: pass --data DIR (or set data.train in the recipe)")
        dataset = _labelled(open_labeled(data.train, size=data.img_size, layout=data.layout,
                                         num_classes=recipe.model.num_classes or None), "--data")
        if not recipe.model.num_classes:
            classes_from_labels(dataset)
        return dataset

    def val_dataset(self):
        data = self.recipe.data
        if not data.val:
            return None
        return _labelled(open_labeled(data.val, size=data.img_size, layout=data.layout, num_classes=self.num_classes),
                         "--val")

    def augment(self, batch: dict) -> dict:
        images = normalize(self._augment(to_unit(batch["image"])))
        if self._mix is None:
            return batch | {"image": images}
        if len(images) % 2:
            raise DlcvkitError(
                f"mixup/cutmix pair each image with another of its process's batch, which has {len(images)} "
                "images; make data.batch_size / processes even"
            )
        images, target = self._mix(images, batch["label"])  # target: soft labels (b C), already smoothed
        return batch | {"image": images, "target": target}

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        logits = model(batch["image"])
        if "target" in batch:
            return F.cross_entropy(logits, batch["target"])
        return F.cross_entropy(logits, batch["label"], label_smoothing=self.recipe.aug.label_smoothing)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches, ctx: RunContext) -> dict:
        confusion = Confusion(self.num_classes, ctx.accelerator.device)
        for batch in batches:
            confusion.update(classifier_logits(model, batch["image"]).argmax(dim=1), batch["label"])
        matrix = confusion.reduce(ctx.accelerator)
        return {"acc": accuracy(matrix), "per_class_acc": per_class_accuracy(matrix).tolist()}


R = TypeVar("R")


def resolve_num_classes(recipe: R, open_train: Callable[[], Any]) -> R:
    """The recipe completed with what its training data decides, as a copy: `model.num_classes` 0 becomes the
    training set's number of classes (`open_train()` opens it, only then). A run writes the resolved recipe, so
    its folder alone rebuilds the model."""
    model = getattr(recipe, "model", None)
    if getattr(model, "num_classes", None) != 0:
        return recipe
    return replace(recipe, model=replace(model, num_classes=open_train().num_classes))


def _labelled(dataset, option: str):
    """`dataset`, which training needs with labels (an inference CSV has none)."""
    if dataset.labels is None:
        raise DlcvkitError(f"{option}: {dataset.label_source(0)} has no label; training needs id,filename,label rows")
    return dataset
