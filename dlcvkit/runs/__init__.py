"""The orchestration above Tasks and what is done with a finished run. A training run (`training`: the recipe of a
new or resumed run, its Task, the engine, the report) and a series of them (`series`: fine-tuning settings A–E and
their table). Then: load a run's recipe and weights, evaluate and predict (one run or an ensemble), with sliding
windows over large images (`slide`) and masks written in background threads (`writer`), georeferenced
masks of GeoTIFFs written window row by window row (`raster`), t-SNE pictures and
probes, export it (ONNX, run in place of the run by `predict --onnx`), refine its masks with Segment Anything,
and score mask files as the course does (`scoring`)."""
