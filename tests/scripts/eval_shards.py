"""Evaluate a fixed, seeded classifier on a P1 folder with the engine's evaluation path; print the reduced
confusion matrix as JSON on the main process. Run with plain python or under `accelerate launch`."""

import json
import sys

import torch
from accelerate.utils import set_seed

from dlcvkit.augment.common import normalize, to_unit
from dlcvkit.config import DataConfig, TrainConfig
from dlcvkit.data.labeled import P1Folder
from dlcvkit.engine.distributed import make_accelerator
from dlcvkit.engine.loaders import device_batches, make_eval_loader
from dlcvkit.engine.metrics import Confusion
from dlcvkit.models.classifier import build_classifier

folder, classes = sys.argv[1], int(sys.argv[2])
accelerator = make_accelerator(TrainConfig())
set_seed(0)
model = build_classifier("test_resnet", classes).eval()
dataset = P1Folder(folder, size=32)
loader = make_eval_loader(dataset, DataConfig(batch_size=4, num_workers=0), accelerator)
confusion = Confusion(classes)
with torch.no_grad():
    for batch in device_batches(loader, accelerator.device):
        confusion.update(model(normalize(to_unit(batch["image"]))).argmax(1), batch["label"])
matrix = confusion.reduce(accelerator)
if accelerator.is_main_process:
    print("CONFUSION " + json.dumps(matrix.tolist()))
