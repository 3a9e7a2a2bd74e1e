"""Augmentations on the training device: kornia pipelines applied to whole batches, random parameters per image."""
