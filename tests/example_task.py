"""An example Task: a linear classifier of 2-D points read from a CSV file of x,y,label rows."""

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from dlcvkit.config import Recipe
from dlcvkit.engine.metrics import Confusion, accuracy
from dlcvkit.engine.task import Task


@dataclass
class PointsModel:
    num_classes: int = 0  # 0 = from the training data


@dataclass
class PointsRecipe(Recipe):
    task: str = "points"
    model: PointsModel = field(default_factory=PointsModel)


class PointsTask(Task):
    best_metric = "acc"  # its best value's weights: RUN_DIR/best.safetensors
    run_files = ("classes.txt",)  # written by `start`; a new run in the folder removes it first

    @classmethod
    def open_train(cls, recipe):
        rows = np.loadtxt(recipe.data.train, delimiter=",", ndmin=2, dtype=np.float32)
        return TensorDataset(torch.from_numpy(rows[:, :2]), torch.from_numpy(rows[:, 2]).long())

    @classmethod
    def resolve(cls, recipe):
        if recipe.model.num_classes:
            return recipe
        classes = int(cls.open_train(recipe).tensors[1].max()) + 1
        return replace(recipe, model=replace(recipe.model, num_classes=classes))

    def val_dataset(self):
        return self.train_dataset()

    @staticmethod
    def collate(samples):
        points, labels = zip(*samples)  # a TensorDataset's samples are tuples; the loop's batches are dicts
        return {"point": torch.stack(points), "label": torch.stack(labels)}

    def build_model(self):
        return nn.Linear(2, self.recipe.model.num_classes)

    def loss(self, model, batch):
        return F.cross_entropy(model(batch["point"]), batch["label"])

    @torch.no_grad()
    def evaluate(self, model, batches, ctx):
        confusion = Confusion(self.recipe.model.num_classes, ctx.accelerator.device)
        for batch in batches:
            confusion.update(model(batch["point"]).argmax(dim=1), batch["label"])
        return {"acc": accuracy(confusion.reduce(ctx.accelerator))}

    def start(self, run_dir):
        (run_dir / "classes.txt").write_text(f"{self.recipe.model.num_classes}\n")
