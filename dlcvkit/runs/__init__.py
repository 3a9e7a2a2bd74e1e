"""What is done with a finished run: load its recipe and weights, evaluate and predict (one run or an ensemble),
with sliding windows over large images (`slide`) and masks written in background threads (`writer`), extract
features for t-SNE and probes, export it (ONNX, run in place of the run by `predict --onnx`), and refine
its masks with Segment Anything."""
