"""The experiment trackers of a run, through accelerate's tracker API: TensorBoard, MLflow, W&B. Each is checked
before the run folder is made, so that a tracker that is not installed stops the run with one line."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from accelerate.tracking import GeneralTracker, MLflowTracker, TensorBoardTracker, WandBTracker

from dlcvkit.config import TrainConfig
from dlcvkit.errors import DlcvkitError

PROJECT = "dlcvkit"  # the MLflow experiment and W&B project of every run; the run is named after its folder
MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # tracker -> module = pip extra


def make_trackers(train: TrainConfig, run_dir: Path) -> list[GeneralTracker]:
    """The trackers of `train.trackers` (each must be installed), plus TensorBoard where `train.tensorboard`
    and it is installed. Nothing is written before `accelerator.init_trackers` starts them."""
    names = list(dict.fromkeys(train.trackers))
    for name in names:
        if importlib.util.find_spec(MODULES[name]) is None:
            raise DlcvkitError(f"train.trackers: {name} is not installed; pip install 'dlcvkit[{name}]' "
                               "(or drop it from train.trackers / --tracker)")
    if train.tensorboard and "tensorboard" not in names and importlib.util.find_spec("tensorboard") is not None:
        names.append("tensorboard")
    return [_tracker(name, Path(run_dir)) for name in names]


def _tracker(name: str, run_dir: Path) -> GeneralTracker:
    if name == "tensorboard":
        return TensorBoardTracker("tensorboard", run_dir)  # RUN_DIR/tensorboard/
    if name == "mlflow":
        if "MLFLOW_TRACKING_URI" not in os.environ:  # no server configured: a store of the run's own, offline
            import mlflow

            # MLflow 3 keeps its file store only on request; a database store would need SQLAlchemy
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
        return MLflowTracker(PROJECT, run_name=run_dir.name)
    return WandBTracker(PROJECT, name=run_dir.name, dir=str(run_dir))  # WANDB_MODE=offline: RUN_DIR/wandb/


def finish_trackers(accelerator) -> None:
    """Close the trackers. Not `accelerator.end_training()`: it also destroys the process group, and one launch
    may run several trainings (the demo, fine-tuning settings A–E); that happens once at exit instead."""
    for tracker in accelerator.trackers:
        tracker.finish()
