"""The trackers of `train.trackers` through accelerate: MLflow with a run's own offline store, read back by MLflow's
client; W&B offline where it is installed; a tracker that is not installed, a store or server that cannot be used
(checked against loopback ports only) stops the run before its folder exists."""

import importlib.util
import socket

import pytest

from dlcvkit.config import TrainConfig
from dlcvkit.engine.loop import fit
from dlcvkit.engine.runlog import read_metrics
from dlcvkit.engine.trackers import CHECKS, make_trackers, tracker_timeout
from dlcvkit.errors import DlcvkitError
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


def test_a_tracker_that_is_not_installed_stops_before_the_run_folder_exists(tmp_path, capsys, monkeypatch, cls_data):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    code, _, err = dlcvkit_here(capsys, "classify", "-r", "demo_cls", "--data", cls_data, "--out",
                                tmp_path / "run", "--tracker", "mlflow", "--tracker", "wandb")
    assert code == 2 and "Traceback" not in err
    assert err.splitlines() == ["dlcvkit: error: train.trackers: wandb is not installed; pip install "
                                "'dlcvkit[wandb]' (or drop it from train.trackers / --tracker)"]
    assert not (tmp_path / "run").exists()


@pytest.fixture
def silent_server():
    """A loopback port that takes connections and never answers (bounded: one listening socket, closed after)."""
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return s.getsockname()[1]  # nothing listens there once it is closed


ADVICE = "unset it to log into RUN_DIR/mlruns, or drop mlflow from train.trackers / --tracker"


@pytest.mark.parametrize("uri, expected", [
    ("refused", "no MLflow server answered within 1 s (connection refused); start the server or fix the URI, or "),
    ("silent", "no MLflow server answered within 1 s (no answer); start the server or fix the URI, or "),
    ("http://[::1", "is not a valid URI (Invalid IPv6 URL); "),
    ("ftp://127.0.0.1/x", "MLflow cannot use this tracking store (scheme 'ftp' is not one it supports here: file, "
                          "databricks, databricks-uc, uc, http, https); "),
    ("file", "MLflow {version} opens a file store only with MLFLOW_ALLOW_FILE_STORE=true; set it, point the URI at a "
             "server, or "),
])
def test_an_mlflow_store_that_cannot_be_used_stops_the_run_before_its_folder(tmp_path, capsys, monkeypatch,
                                                                           silent_server, uri, expected, cls_data):
    mlflow = pytest.importorskip("mlflow")
    if uri == "file" and not hasattr(mlflow.environment_variables, "MLFLOW_ALLOW_FILE_STORE"):
        pytest.skip("MLflow before 3 opens file stores unasked")
    uri = {"refused": f"http://127.0.0.1:{_closed_port()}", "silent": f"http://127.0.0.1:{silent_server}",
           "file": (tmp_path / "store").as_uri()}.get(uri, uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.setenv("DLCVKIT_TRACKER_TIMEOUT", "1")
    code, _, err = dlcvkit_here(capsys, "classify", "-r", "demo_cls", "--data", cls_data, "--out",
                                tmp_path / "run", "--tracker", "mlflow")
    assert code == 2
    expected = expected.format(version=mlflow.__version__)
    separator = " " if expected.startswith("is not") else ": "
    assert err.splitlines() == [f"dlcvkit: error: MLFLOW_TRACKING_URI={uri}{separator}{expected}{ADVICE}"]
    assert not (tmp_path / "run").exists() and not (tmp_path / "store").exists()


def test_a_user_file_store_is_used_when_allowed_and_refused_where_it_cannot_be_written(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "store").as_uri())
    train = TrainConfig(trackers=["mlflow"], tensorboard=False)
    assert [type(t).__name__ for t in make_trackers(train, tmp_path / "run")] == ["MLflowTracker"]
    assert not (tmp_path / "store").exists() and not (tmp_path / "run").exists()  # the check wrote nothing
    (tmp_path / "file").write_text("x")
    uri = (tmp_path / "file" / "store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(DlcvkitError) as error:
        make_trackers(train, tmp_path / "run")
    assert str(error.value) == (f"MLFLOW_TRACKING_URI={uri}: {tmp_path / 'file'} is not a writable folder; fix its "
                                f"permissions, choose another store, or {ADVICE}")


def test_online_wandb_without_its_server_says_to_set_wandb_mode_offline(tmp_path, monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("DLCVKIT_TRACKER_TIMEOUT", "1")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.raises(DlcvkitError) as error:
        CHECKS["wandb"](tmp_path / "run")
    assert str(error.value) == (f"train.trackers: W&B is online (WANDB_MODE=online) and its server "
                                f"http://127.0.0.1:{port} did not answer within 1 s (connection refused); set "
                                "WANDB_MODE=offline to log into RUN_DIR/wandb (`wandb sync` uploads it later), or "
                                "check the network")
    monkeypatch.setenv("WANDB_MODE", "offline")
    CHECKS["wandb"](tmp_path / "run")  # offline: no server asked


def test_a_tensorboard_folder_that_cannot_be_written_stops_the_run(tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "tensorboard" else
                        find_spec(name, *a))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "tensorboard").write_text("not a folder")
    with pytest.raises(DlcvkitError) as error:
        make_trackers(TrainConfig(), tmp_path / "run")
    assert str(error.value) == (f"train.trackers: TensorBoard logs to {tmp_path / 'run' / 'tensorboard'}, which is "
                                "not a writable folder; fix its permissions, or turn TensorBoard off with --set "
                                "train.tensorboard=false")


def test_a_bad_tracker_timeout_is_named(monkeypatch):
    monkeypatch.setenv("DLCVKIT_TRACKER_TIMEOUT", "soon")
    with pytest.raises(DlcvkitError, match=r"^DLCVKIT_TRACKER_TIMEOUT='soon': expected a number of seconds > 0"):
        tracker_timeout()


def test_an_mlflow_server_that_answers_with_an_error_is_named_with_its_answer(tmp_path, monkeypatch):
    """A loopback server that answers every request with 401: the check says what it answered, not that it is down."""
    pytest.importorskip("mlflow")
    import http.server
    import threading

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b"credentials required")

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{server.server_port}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("DLCVKIT_TRACKER_TIMEOUT", "2")
        with pytest.raises(DlcvkitError) as error:
            make_trackers(TrainConfig(trackers=["mlflow"], tensorboard=False), tmp_path / "run")
    finally:
        server.shutdown()
        thread.join(5)
    assert str(error.value).startswith(f"MLFLOW_TRACKING_URI={uri}: MLflow cannot use this tracking store (")
    assert "401" in str(error.value) and str(error.value).endswith(ADVICE)
