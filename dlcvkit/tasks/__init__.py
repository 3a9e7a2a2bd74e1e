"""Tasks: what differs between jobs (BYOL, fine-tuning, classification, segmentation), plugged into the engine."""
