"""Pictures: t-SNE/PCA embeddings, segmentation mask overlays and grids, confusion matrices, training curves
(matplotlib)."""
