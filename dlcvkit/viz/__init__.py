"""Pictures: t-SNE/PCA embeddings, segmentation mask overlays and grids, training curves (matplotlib)."""
