"""BYOL self-supervised pre-training on unlabeled images; exports the online encoder as `backbone.safetensors`.
With a labelled monitor set (`monitor.data`, `--monitor DIR`), every evaluation (`train.eval_every` epochs and the
end) logs the kNN accuracy of the online encoder's features, as solo-learn and Lightly watch SSL runs: the loss
alone flattens early whether or not the encoder learns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from dlcvkit.augment.byol import byol_views
from accelerate.utils import gather_object

from dlcvkit.augment.common import normalize, to_unit
from dlcvkit.config import Recipe
from dlcvkit.data.folders import UnlabeledFolder
from dlcvkit.data.labeled import open_labeled
from dlcvkit.engine.ema import EMA
from dlcvkit.engine.metrics import knn_predict
from dlcvkit.engine.task import RunContext, Task
from dlcvkit.engine.weights import save_weights
from dlcvkit.errors import DlcvkitError
from dlcvkit.models.byol import BYOL, build_byol
from dlcvkit.data.office_home import office_home_splits
from dlcvkit.runnames import BACKBONE_FILE

QUERY_EVERY = 5  # of the monitor set, samples 4, 9, 14, ... are classified by the kNN of all the others


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
    # torch.compile kornia's colour jitter (the same random draws): faster views on the CPU after a one-off
    # compile of 10-50 s (needs a C compiler); see dlcvkit.augment.byol.compile_colour_jitter
    compile: bool = False


@dataclass
class ByolMonitor:
    data: str = ""  # labelled images (any layout of `dlcvkit classify`; an Office-Home folder: its train/), "" = none
    k: int = 20  # neighbours of the cosine kNN majority vote (as `dlcvkit eval probe`)


@dataclass
class ByolRecipe(Recipe):
    task: str = "byol"
    model: ByolModel = field(default_factory=ByolModel)
    aug: ByolAug = field(default_factory=ByolAug)
    monitor: ByolMonitor = field(default_factory=ByolMonitor)


class ByolTask(Task):
    run_files = (BACKBONE_FILE,)

    def __init__(self, recipe: ByolRecipe) -> None:
        super().__init__(recipe)
        self._views = byol_views(recipe.aug.preset, recipe.data.img_size, recipe.aug.compile)

    def build_model(self) -> BYOL:
        m = self.recipe.model
        return build_byol(m.backbone, m.pretrained, m.projection_hidden, m.projection_dim, m.prediction_hidden)

    @classmethod
    def open_train(cls, recipe: ByolRecipe) -> UnlabeledFolder:
        data = recipe.data
        if not data.train:
            raise DlcvkitError("no training images: pass --data DIR (a folder of images, e.g. mini/train)")
        return UnlabeledFolder(data.train, size=data.img_size)

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
    def evaluate(self, model: BYOL, batches, ctx: RunContext) -> dict:
        """kNN accuracy of the online encoder's features on the monitor set: every fifth sample classified by the
        others. Each process embeds its share; the features are gathered in dataset order, so that 1 and N
        processes vote on the same features."""
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
        # with the timm name and image size in the file, `dlcvkit eval probe` needs no --model or --img-size
        metadata = {"backbone": self.recipe.model.backbone, "img_size": str(self.recipe.data.img_size),
                    "byol_step": str(ctx.step)}
        save_weights(model.encoder.state_dict(), ctx.run_dir / BACKBONE_FILE, metadata)
