"""What is done with a finished run: load, evaluate, predict, ensembles, features, export (ONNX), SAM refinement."""
