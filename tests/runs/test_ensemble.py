"""Ensembles average the members' softmax probabilities: a hand-computed case where the ensemble beats both members
and differs from a majority vote."""

import torch

from dlcvkit.engine.metrics import Confusion, accuracy
from dlcvkit.runs.ensemble import ensemble_prediction


def test_mean_of_probabilities_by_hand():
    labels = torch.tensor([0, 1, 0])
    a = torch.tensor([[0.90, 0.10], [0.60, 0.40], [0.45, 0.55]])  # right, wrong, wrong: 1/3
    b = torch.tensor([[0.20, 0.80], [0.10, 0.90], [0.60, 0.40]])  # wrong, right, right: 2/3
    # means: [0.55, 0.45] -> 0, [0.35, 0.65] -> 1, [0.525, 0.475] -> 0: all right
    pred = ensemble_prediction(torch.stack([a, b]))
    assert pred.tolist() == [0, 1, 0]
    confusion = Confusion(2)
    confusion.update(pred, labels)
    assert accuracy(confusion.matrix) == 1.0
    # not a vote of the members' argmaxes, which disagree on sample 0 and would settle it by class order
    confident_wrong = torch.tensor([[0.05, 0.95], [0.5, 0.5], [0.5, 0.5]])
    assert ensemble_prediction(torch.stack([a, confident_wrong])).tolist()[0] == 1
