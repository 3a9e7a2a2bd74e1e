"""The trackers of `train.trackers` through accelerate: MLflow with a run's own offline store, read back by MLflow's
client; W&B offline where it is installed; a tracker that is not installed stops the run before its folder exists."""

import importlib.util

import pytest

from dlcvkit.data.synth import synth_cls
from dlcvkit.engine.loop import fit
from dlcvkit.engine.runlog import read_metrics
from tests.cli_runner import dlcvkit_here
from tests.engine.test_loop import ScoredLineTask, _task


def _tracked(tracker: str) -> ScoredLineTask:
    task = _task(cls=ScoredLineTask)
    task.recipe.train.trackers = [tracker]
    return task


def test_mlflow_reads_back_the_metrics_of_metrics_jsonl(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    fit(_tracked("mlflow"), tmp_path / "run")
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "run" / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "dlcvkit"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run" and run.data.params["train.epochs"] == "2"
    records = read_metrics(tmp_path / "run")
    for key, split in (("train/loss", None), ("train/lr", None), ("val/neg_mse", "val")):
        name = key.split("/")[1]
        expected = [(r["step"], r[name]) for r in records if r.get("split") == split]
        history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert history == expected and len(history) == (8 if split is None else 2)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed")
def test_wandb_logs_offline_into_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    fit(_tracked("wandb"), tmp_path / "run")
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))


def test_a_tracker_that_is_not_installed_stops_before_the_run_folder_exists(tmp_path, capsys, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    synth_cls(tmp_path / "data", n=8, size=32, classes=2)
    code, _, err = dlcvkit_here(capsys, "classify", "-r", "demo_cls", "--data", tmp_path / "data", "--out",
                                tmp_path / "run", "--tracker", "mlflow", "--tracker", "wandb")
    assert code == 2 and "Traceback" not in err
    assert err.splitlines() == ["dlcvkit: error: train.trackers: wandb is not installed; pip install "
                                "'dlcvkit[wandb]' (or drop it from train.trackers / --tracker)"]
    assert not (tmp_path / "run").exists()
