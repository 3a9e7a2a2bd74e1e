"""Class-balanced subsets (dlcvkit/data/subset.py): counts per class, fixed by the seed."""

from collections import Counter

import pytest

from dlcvkit.data.subset import balanced_indices
from dlcvkit.errors import DlcvkitError


def test_balanced_fraction_counts_each_class():
    labels = [0] * 100 + [1] * 50 + [2] * 10
    chosen = balanced_indices(labels, fraction=0.1, seed=3)
    assert Counter(labels[i] for i in chosen) == {0: 10, 1: 5, 2: 1}
    assert chosen == balanced_indices(labels, fraction=0.1, seed=3) == sorted(chosen)
    assert chosen != balanced_indices(labels, fraction=0.1, seed=4)
    assert Counter(labels[i] for i in balanced_indices(labels, fraction=0.01)) == {0: 1, 1: 1, 2: 1}  # >= 1 each


def test_per_class_and_bad_sizes():
    labels = [0] * 5 + [1] * 3
    assert Counter(labels[i] for i in balanced_indices(labels, per_class=3, seed=0)) == {0: 3, 1: 3}
    assert balanced_indices(labels) == list(range(8))  # no size given: everything
    with pytest.raises(DlcvkitError, match="class 1 has only 3 samples"):
        balanced_indices(labels, per_class=4)
    with pytest.raises(DlcvkitError, match=r"label_fraction must be in \(0, 1\]"):
        balanced_indices(labels, fraction=0, option="label_fraction")
