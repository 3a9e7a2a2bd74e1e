"""What every self-supervised method shares, once (as solo-learn's BaseMethod / BaseMomentumMethod): the unlabeled
training folder, the views on the device, the EMA teacher and its cosine momentum schedule, the kNN monitor and
the exported `backbone.safetensors`. A method (dlcvkit.tasks.byol, dino, simclr) is one module on `SslTask`:

- its recipe: an `SslRecipe` whose `model` section (an `SslModel`) adds the method's heads and, with an EMA
  teacher, `tau_base`; an `aug` section of its own;
- `build_views()`: a `dlcvkit.augment.views.Views` of (count, pipeline) pairs: which views, their sizes, crop scales
  and augmentations; `loss` receives them, normalised, as `batch["views"]` in that order;
- `build_model()`: a module whose `encoder` is the timm backbone (pooled features, no classifier): what the monitor
  embeds and `backbone.safetensors` holds;
- `loss(model, batch)`; an EMA teacher by naming the (student, teacher) modules in `teacher`.

The monitor, the export, fine-tuning (`dlcvkit finetune --backbone`), probes and t-SNE then work for every method
without a change."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from accelerate.utils import gather_object
from torch import nn

from dlcvkit.augment.common import normalize, to_unit
from dlcvkit.augment.views import Views
from dlcvkit.config import Recipe
from dlcvkit.data.folders import UnlabeledFolder
from dlcvkit.data.labeled import open_labeled
from dlcvkit.data.office_home import office_home_splits
from dlcvkit.engine.ema import EMA
from dlcvkit.engine.metrics import knn_predict
from dlcvkit.engine.task import RunContext, Task
from dlcvkit.engine.weights import save_weights
from dlcvkit.errors import DlcvkitError
from dlcvkit.runnames import BACKBONE_FILE

QUERY_EVERY = 5  # of the monitor set, samples 4, 9, 14, ... are classified by the kNN of all the others


@dataclass
class SslModel:
    backbone: str = "resnet50"  # any timm model name (pooled features are the representation)
    pretrained: str = ""  # "" = random init (the methods' setting), a local weights file, or "hub"


@dataclass
class SslMonitor:
    data: str = ""  # labelled images (any layout of `dlcvkit classify`; an Office-Home folder: its train/), "" = none
    k: int = 20  # neighbours of the cosine kNN majority vote (as `dlcvkit eval probe`)


@dataclass
class SslRecipe(Recipe):
    model: SslModel = field(default_factory=SslModel)
    monitor: SslMonitor = field(default_factory=SslMonitor)


def frozen_copy(network: nn.Module) -> nn.Module:
    """An EMA teacher of `network`: a copy that no optimizer sees (no gradient). It normalises by batch statistics
    like the student (it runs in train mode), but its BatchNorm running statistics must be only the EMA of the
    student's: momentum 0 keeps its own forward passes from moving them."""
    teacher = copy.deepcopy(network).requires_grad_(False)
    for module in teacher.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.0
    return teacher


class SslTask(Task):
    """A self-supervised method: see the module's docstring for what a method declares."""

    run_files = (BACKBONE_FILE,)
    teacher: tuple[str, str] | None = None  # (student, teacher) module names of an EMA teacher, e.g. BYOL's

    def __init__(self, recipe: SslRecipe) -> None:
        super().__init__(recipe)
        self.views = self.build_views()

    def build_views(self) -> Views:
        """The method's views of a batch (see dlcvkit.augment.views)."""
        raise NotImplementedError

    @classmethod
    def open_train(cls, recipe: SslRecipe) -> UnlabeledFolder:
        data = recipe.data
        if not data.train:
            raise DlcvkitError("no training images: pass --data DIR (a folder of images, e.g. mini/train)")
        return UnlabeledFolder(data.train, size=data.img_size)

    def augment(self, batch: dict) -> dict:
        return {"views": [normalize(view) for view in self.views(to_unit(batch["image"]))]}

    def emas(self, model: nn.Module, total_steps: int) -> list[EMA]:
        """The teacher ξ ← τξ + (1 − τ)θ after every optimizer step, τ from `model.tau_base` rising to 1 by a
        cosine over the run's optimizer steps (BYOL §3.2, DINO §3.1); BatchNorm running statistics are averaged
        like the weights."""
        if self.teacher is None:
            return []
        student, teacher = (getattr(model, name) for name in self.teacher)
        return [EMA(student, teacher, self.recipe.model.tau_base, total_steps, buffers="average")]

    def val_dataset(self):
        """The monitor set, if any."""
        monitor = self.recipe.monitor
        if not monitor.data:
            return None
        if monitor.k < 1:
            raise DlcvkitError(f"recipe key 'monitor.k' must be at least 1, got {monitor.k}")
        splits = office_home_splits(monitor.data)
        dataset = open_labeled(splits[0] if splits else monitor.data, size=self.recipe.data.img_size)
        if dataset.labels is None or len(dataset) < QUERY_EVERY:
            raise DlcvkitError(f"monitor.data {monitor.data}: the monitor needs at least {QUERY_EVERY} labelled "
                               "images (a P1 or ImageFolder folder, or a CSV of id,filename,label)")
        return dataset

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches, ctx: RunContext) -> dict:
        """kNN accuracy of the encoder's features on the monitor set: every fifth sample classified by the others.
        Each process embeds its share; the features are gathered in dataset order, so that 1 and N processes vote
        on the same features."""
        accelerator = ctx.accelerator
        # EvalBatches gives process r the batches r, r + N, r + 2N, ... of consecutive samples
        local = [(i * accelerator.num_processes + accelerator.process_index,
                  model.encoder(normalize(to_unit(batch["image"]))).float().cpu(), batch["label"].cpu())
                 for i, batch in enumerate(batches)]
        shares = sorted(gather_object(local) if accelerator.num_processes > 1 else local, key=lambda s: s[0])
        features, labels = torch.cat([s[1] for s in shares]), torch.cat([s[2] for s in shares])
        query = torch.arange(len(labels)) % QUERY_EVERY == QUERY_EVERY - 1
        predicted = knn_predict(features[~query], labels[~query], features[query], self.recipe.monitor.k)
        return {"knn_acc": float((predicted == labels[query]).float().mean())}

    def export(self, model: nn.Module, ctx: RunContext) -> None:
        """`backbone.safetensors`: the encoder only, loadable by `timm.create_model(name, num_classes=0)`."""
        # with the timm name and image size in the file, `dlcvkit eval probe` needs no --model or --img-size
        metadata = {"backbone": self.recipe.model.backbone, "img_size": str(self.recipe.data.img_size),
                    "method": self.recipe.task, f"{self.recipe.task}_step": str(ctx.step)}
        save_weights(model.encoder.state_dict(), ctx.run_dir / BACKBONE_FILE, metadata)
