"""Image classification (course P1): a timm backbone with a recipe-defined head, cross-entropy (label smoothing,
optional mixup/cutmix), accuracy and per-class accuracy; and inference with one run or an ensemble of runs
(the mean of their softmax probabilities) on the engine's exact evaluation shards."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from dlcvkit.augment.classify import classification_augment, mixup_cutmix
from dlcvkit.augment.common import normalize, to_unit
from dlcvkit.config import DataConfig, Recipe
from dlcvkit.data.datasets import classes_from_labels, open_labeled
from dlcvkit.engine.loaders import device_batches, make_eval_loader
from dlcvkit.engine.metrics import Confusion, accuracy, per_class_accuracy
from dlcvkit.engine.task import RunContext, Task
from dlcvkit.errors import DlcvkitError
from dlcvkit.models.classifier import Classifier, build_classifier


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
        super().__init__(recipe)
        if not recipe.model.num_classes:  # resolved into the recipe, so RUN_DIR/recipe.toml rebuilds the model
            recipe.model.num_classes = classes_from_labels(self.train_dataset())
        self.num_classes = recipe.model.num_classes
        aug = recipe.aug
        self._augment = classification_augment(aug.preset, recipe.data.img_size)
        self._mix = mixup_cutmix(aug.mixup, aug.cutmix, aug.mix_prob, aug.switch_prob, aug.label_smoothing,
                                 self.num_classes)

    def build_model(self) -> nn.Module:
        m = self.recipe.model
        return build_classifier(m.backbone, self.num_classes, m.head, m.dropout, m.pretrained, m.freeze_backbone,
                                pool=m.pool, grid=m.grid, small_images=m.small_images, input_size=m.input_size)

    def train_dataset(self):
        data = self.recipe.data
        if not data.train:
            raise DlcvkitError("no training data: pass --data DIR (or set data.train in the recipe)")
        if getattr(self, "_train", None) is None:
            self._train = _labelled(open_labeled(data.train, size=data.img_size, layout=data.layout,
                                                 num_classes=self.recipe.model.num_classes or None), "--data")
        return self._train

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


def _labelled(dataset, option: str):
    """`dataset`, which training needs with labels (an inference CSV has none)."""
    if dataset.labels is None:
        raise DlcvkitError(f"{option}: {dataset.label_source(0)} has no label; training needs id,filename,label rows")
    return dataset


# ------------------------------------------------------------------------------------------------ inference


@dataclass
class Member:
    """One run of an ensemble: its folder, resolved recipe and model (a Classifier, in eval mode)."""

    run_dir: str
    recipe: Recipe
    model: Classifier


def load_members(run_dirs: list, weights: str, device: torch.device) -> list[Member]:
    """The runs' models (any registered task whose model is a Classifier); all must have the same classes."""
    from dlcvkit.tasks.registry import load_run  # the registry imports task modules: no cycle at import time

    members = []
    for run_dir in run_dirs:
        recipe, _, model = load_run(run_dir, weights, device)
        if not isinstance(model, Classifier):
            raise DlcvkitError(f"--run {run_dir}: a '{recipe.task}' run, whose model is not an image classifier")
        members.append(Member(str(run_dir), recipe, model))
    classes = {m.model.head[-1].out_features for m in members}
    if len(classes) > 1:
        found = ", ".join(f"{m.run_dir}: {m.model.head[-1].out_features}" for m in members)
        raise DlcvkitError(f"the runs of an ensemble must have the same classes; they have {found}")
    return members


@torch.no_grad()
def member_probabilities(
    members: list[Member],
    open_dataset: Callable[[int], Dataset],
    accelerator,
    batch_size: int,
    num_workers: int,
) -> tuple[torch.Tensor, torch.Tensor, Dataset]:
    """Softmax probabilities of every member on this process's evaluation shard.

    `open_dataset(size)` opens the data decoded at `size` px; members trained at different `data.img_size`
    each read it at their own size (one pass per size). The shards are the engine's `EvalBatches`: every
    sample once over all processes, in the same batches on any number of processes, so results are
    bit-identical for 1 and N processes. Returns (sample indices (n), probabilities (m n C), dataset).
    """
    data = DataConfig(batch_size=batch_size, num_workers=num_workers)
    probs: list[torch.Tensor | None] = [None] * len(members)
    indices = dataset = None
    for size in sorted({m.recipe.data.img_size for m in members}):
        dataset = open_dataset(size)
        loader = make_eval_loader(dataset, data, accelerator)
        indices = torch.tensor([i for batch in loader.batch_sampler for i in batch], dtype=torch.long)
        group = [k for k, m in enumerate(members) if m.recipe.data.img_size == size]
        outputs: dict[int, list[torch.Tensor]] = {k: [] for k in group}
        for batch in device_batches(loader, accelerator.device):
            for k in group:
                outputs[k].append(classifier_logits(members[k].model, batch["image"]).float().softmax(dim=1))
        for k in group:  # an empty shard (more processes than images) asks the model for its classes
            probs[k] = torch.cat(outputs[k]) if outputs[k] else torch.zeros(
                0, members[k].model.head[-1].out_features, device=accelerator.device)
    return indices, torch.stack(probs), dataset


def ensemble_prediction(probs: torch.Tensor) -> torch.Tensor:
    """Class ids (n) of the ensemble: argmax of the mean of the members' probabilities (m n C)."""
    return probs.mean(dim=0).argmax(dim=1)


def evaluate_members(members: list[Member], open_dataset: Callable[[int], Dataset], accelerator,
                     batch_size: int, num_workers: int) -> dict:
    """Accuracy, per-class accuracy and confusion matrix of the ensemble (or the single run), and each member's
    accuracy; identical on every process."""
    indices, probs, dataset = member_probabilities(members, open_dataset, accelerator, batch_size, num_workers)
    if getattr(dataset, "labels", None) is None:
        raise DlcvkitError("the evaluation data has no labels (an inference CSV?); use `dlcvkit predict cls`")
    labels = torch.tensor(dataset.labels, dtype=torch.long)[indices].to(accelerator.device)
    classes = probs.shape[-1]

    def confusion_of(pred: torch.Tensor) -> torch.Tensor:
        confusion = Confusion(classes, accelerator.device)
        confusion.update(pred, labels)
        return confusion.reduce(accelerator).cpu()

    matrix = confusion_of(ensemble_prediction(probs))
    result = {
        "runs": [m.run_dir for m in members],
        "samples": int(matrix.sum()),
        "acc": accuracy(matrix),
        "per_class_acc": per_class_accuracy(matrix).tolist(),
        "confusion": matrix.tolist(),
    }
    if len(members) > 1:
        result["member_acc"] = [accuracy(confusion_of(p.argmax(dim=1))) for p in probs]
    return result
