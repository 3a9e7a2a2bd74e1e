"""2-D embeddings (PCA against numpy, t-SNE separating clusters) and the panel layout for many classes."""

import numpy as np
import pytest
from PIL import Image

from dlcvkit.errors import DlcvkitError
from dlcvkit.viz.tsne import class_groups, embed_2d, plot_embedding


def _clusters(classes: int, per_class: int = 8, dim: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    centres = rng.normal(scale=10.0, size=(classes, dim))
    return centres[labels] + rng.normal(size=(len(labels), dim)), labels


def test_pca_equals_the_projection_on_the_top_two_singular_vectors():
    x, _ = _clusters(4)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:2].T
    got = embed_2d(x, "pca")
    signs = np.sign((got * expected).sum(axis=0))  # each component is defined up to its sign
    np.testing.assert_allclose(got * signs, expected, rtol=1e-3, atol=1e-3)


def test_tsne_keeps_separated_clusters_apart():
    x, labels = _clusters(3, per_class=10)
    points = embed_2d(x, "tsne", seed=0)
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    assert (labels[distances.argmin(axis=1)] == labels).all()  # every point's nearest neighbour is of its class


def test_classes_are_shown_in_panels_of_ten():
    assert [len(g) for g in class_groups(list(range(65)))] == [10] * 6 + [5]
    assert class_groups(list(range(65)))[-1] == [60, 61, 62, 63, 64]


def test_figure_has_an_overview_and_five_panels_for_50_classes(tmp_path):
    x, labels = _clusters(3)
    with Image.open(plot_embedding(x, labels, tmp_path / "three.png", method="pca")) as small:
        one_panel = small.size
    x, labels = _clusters(50, per_class=2)
    with Image.open(plot_embedding(x, labels, tmp_path / "fifty.png", method="pca")) as big:
        assert big.size == (3 * one_panel[0], 2 * one_panel[1])  # 6 panels: 3 columns x 2 rows


def test_bad_inputs_are_one_line_errors(tmp_path):
    x, labels = _clusters(3)
    with pytest.raises(DlcvkitError, match="method"):
        plot_embedding(x, labels, tmp_path / "x.png", method="umap")
    with pytest.raises(DlcvkitError, match="name"):
        plot_embedding(x, labels, tmp_path / "x.png", class_names=["a", "b"])
    with pytest.raises(DlcvkitError, match="labels"):
        plot_embedding(x, labels[:-1], tmp_path / "x.png")
