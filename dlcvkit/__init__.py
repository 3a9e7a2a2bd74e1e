"""dlcvkit: one Accelerate engine for the course's computer-vision jobs (BYOL, classification, segmentation)."""

__version__ = "0.1.0"
