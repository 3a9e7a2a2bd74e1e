"""Office-Home fine-tuning in the reference report's settings A–E: the classification task with a backbone
that starts from nothing (A), a supervised file (B full, D frozen) or our BYOL `backbone.safetensors`
(C full, E frozen). The head is the recipe's, the same in every setting; the model is a `Classifier`, so
`dlcvkit predict cls` and `dlcvkit tsne` work on finetune runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from dlcvkit.data.subset import LabelSubset, balanced_indices
from dlcvkit.engine.features import extract_features
from dlcvkit.engine.task import RunContext
from dlcvkit.errors import DlcvkitError
from dlcvkit.models.backbones import load_backbone_weights
from dlcvkit.models.classifier import Classifier
from dlcvkit.tasks.classify import ClassifyRecipe, ClassifyTask


@dataclass(frozen=True)
class Setting:
    """One row of the reference report's table."""

    pretraining: str  # what the backbone starts from (table column "pre-training")
    finetuning: str  # what is trained (table column "fine-tuning")
    source: Literal["", "supervised", "byol"]  # which backbone file it needs ("" = none)
    freeze: bool


SETTINGS = {
    "A": Setting("-", "full model (backbone + classifier)", "", False),
    "B": Setting("w/ labels (supervised backbone)", "full model (backbone + classifier)", "supervised", False),
    "C": Setting("w/o labels (our BYOL backbone)", "full model (backbone + classifier)", "byol", False),
    "D": Setting("w/ labels (supervised backbone)", "frozen backbone, classifier only", "supervised", True),
    "E": Setting("w/o labels (our BYOL backbone)", "frozen backbone, classifier only", "byol", True),
}
LABELS_SUBSET = "labels_subset.txt"  # RUN_DIR's list of the training files used with label_fraction < 1
TSNE_DIR = "tsne"  # RUN_DIR/tsne/epoch_XXX.png, with viz.tsne_every


@dataclass
class FinetuneViz:
    tsne_every: int = 0  # epochs between t-SNE pictures of the validation features, RUN_DIR/tsne/ (0 = none)


@dataclass
class FinetuneRecipe(ClassifyRecipe):
    task: str = "finetune"
    setting: Literal["", "A", "B", "C", "D", "E"] = ""  # A–E when run with --setting (model.pretrained and model.freeze_backbone follow it)
    # share of each class of the training labels used (BYOL paper, Table 2: 0.01 and 0.1), drawn by train.seed
    label_fraction: float = 1.0
    viz: FinetuneViz = field(default_factory=FinetuneViz)


def setting_overrides(setting: str, backbone: str | Path | None) -> list[str]:
    """The `--set` overrides of a setting: `setting`, `model.pretrained` (its backbone file, needed by B–E) and
    `model.freeze_backbone`."""
    if setting not in SETTINGS:
        raise DlcvkitError(f"--setting {setting!r}: expected one of {', '.join(SETTINGS)}")
    row = SETTINGS[setting]
    if row.source and not backbone:
        raise DlcvkitError(f"setting {setting} starts from a {row.source} backbone: pass its file with --backbone PATH")
    if not row.source and backbone:
        raise DlcvkitError(f"setting {setting} trains from random init; drop --backbone")
    path = json.dumps(str(backbone or ""))  # a JSON string is a valid TOML string, quotes and backslashes escaped
    return [f'setting="{setting}"', f"model.pretrained={path}", f"model.freeze_backbone={str(row.freeze).lower()}"]


class FinetuneTask(ClassifyTask):
    run_files = (TSNE_DIR, LABELS_SUBSET)

    def __init__(self, recipe: FinetuneRecipe) -> None:
        super().__init__(recipe)
        self._subset = None
        if recipe.setting:
            row = SETTINGS[recipe.setting]
            if bool(row.source) != bool(recipe.model.pretrained) or row.freeze != recipe.model.freeze_backbone:
                raise DlcvkitError(
                    f"setting {recipe.setting} needs model.pretrained {'set' if row.source else 'empty'} and "
                    f"model.freeze_backbone={str(row.freeze).lower()}; use --setting (it sets both) or fix the recipe"
                )
        if not 0 < recipe.label_fraction <= 1:
            raise DlcvkitError(f"label_fraction (--label-fraction) must be in (0, 1], got {recipe.label_fraction}")
        if recipe.viz.tsne_every > 0 and not recipe.data.val:
            raise DlcvkitError("viz.tsne_every (--tsne-every) pictures the validation set: pass --val as well")

    def train_dataset(self):
        """The labelled training set, or with `label_fraction` < 1 its class-balanced subset (fixed by
        train.seed, the same on every process)."""
        full = super().train_dataset()
        if self.recipe.label_fraction == 1:
            return full
        if self._subset is None:  # one object: what data.skip_bad leaves out of it is what start() lists
            self._subset = LabelSubset(full, balanced_indices(full.labels, fraction=self.recipe.label_fraction,
                                                              seed=self.recipe.train.seed, option="label_fraction"))
        return self._subset

    def start(self, run_dir: Path) -> None:
        """With `label_fraction` < 1, RUN_DIR/labels_subset.txt: the training files used, one per line."""
        if self.recipe.label_fraction < 1:
            subset = self.train_dataset()
            lines = (f"{subset.files(i)[0]}\n" for i in range(len(subset)))
            (run_dir / LABELS_SUBSET).write_text("".join(lines))

    def build_model(self) -> Classifier:
        """The classification task's model at random init, then the backbone file (if any) loaded strictly."""
        source = self.recipe.model.pretrained
        model = self.classifier(replace(self.recipe.model, pretrained=""))
        if source:
            # with model.pool = "grid" the timm network sits inside the pooling wrapper
            load_backbone_weights(getattr(model.backbone, "net", model.backbone), source)
        return model

    def after_epoch(self, model: Classifier, ctx: RunContext) -> None:
        """Every `viz.tsne_every` epochs, a t-SNE picture of the validation set's penultimate features."""
        every = self.recipe.viz.tsne_every
        if every <= 0 or ctx.epoch % every or not ctx.accelerator.is_main_process:
            return
        from dlcvkit.viz.tsne import plot_embedding

        was_training = model.training
        model.eval()
        features, labels = extract_features(model.features, self.val_dataset(), self.recipe.data, ctx.accelerator.device)
        model.train(was_training)
        title = f"setting {self.recipe.setting} " if self.recipe.setting else ""
        plot_embedding(features, labels, ctx.run_dir / TSNE_DIR / f"epoch_{ctx.epoch:03d}.png",
                       title=f"{title}epoch {ctx.epoch}: t-SNE of the validation features", seed=self.recipe.train.seed)
