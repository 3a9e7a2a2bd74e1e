"""Inference with one classification run or an ensemble of runs (the mean of their softmax probabilities) on the
engine's exact evaluation shards."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.data import Dataset

from dlcvkit.config import DataConfig, Recipe
from dlcvkit.engine.loaders import device_batches, make_eval_loader
from dlcvkit.engine.metrics import Confusion, accuracy, per_class_accuracy
from dlcvkit.errors import DlcvkitError
from dlcvkit.models.classifier import Classifier
from dlcvkit.runs.load import CLASSIFIERS, check_run_kind, load_run
from dlcvkit.tasks.classify import classifier_logits


@dataclass
class Member:
    """One run of an ensemble: its folder, resolved recipe and model (a Classifier, in eval mode)."""

    run_dir: str
    recipe: Recipe
    model: Classifier


def load_members(run_dirs: list, weights: str, device: torch.device) -> list[Member]:
    """The runs' models (of the classifier tasks, CLASSIFIERS); all must have the same classes."""
    members = []
    for run_dir in run_dirs:
        check_run_kind(run_dir, CLASSIFIERS)
        recipe, _, model = load_run(run_dir, weights, device)
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
