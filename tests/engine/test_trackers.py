"""The trackers of `train.trackers` through accelerate: MLflow with a run's own offline store, read back by MLflow's
client; W&B offline where it is installed; a tracker that is not installed, a store or server that cannot be used
(checked against loopback ports only) stops the run before its folder exists."""

import importlib.machinery
import importlib.util
import json
import shutil
import socket
import sys
import types

import pytest
import torch.utils

from dlcvkit.config import TrainConfig
from dlcvkit.data.synth import synth_cls
from dlcvkit.engine.loop import fit
from dlcvkit.engine.runlog import read_metrics
from dlcvkit.engine.trackers import CHECKS, make_trackers, read_tracker_ids, tracker_timeout
from dlcvkit.errors import DlcvkitError
from tests.cli_runner import dlcvkit_here
from tests.engine.test_loop import ScoredLineTask, _task
from tests.engine.test_stop_signals import RECIPE


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


def _mlflow_run(mlflow, run_dir):
    """The client of RUN_DIR's own store and its only run of the experiment dlcvkit."""
    client = mlflow.tracking.MlflowClient(tracking_uri=(run_dir / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "dlcvkit"]
    (run,) = client.search_runs([experiment.experiment_id])
    return client, run


def _latest_per_step(client, run_id, key) -> list[tuple[int, float]]:
    """(step, value) of a metric, the point logged last at each step."""
    latest = {}
    for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp):
        latest[m.step] = m.value
    return sorted(latest.items())


def test_a_resumed_run_continues_its_mlflow_run_where_the_lost_steps_are_logged_again(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    fit(_tracked("mlflow"), tmp_path / "whole")
    run_dir = tmp_path / "split"

    def tracked():
        task = _tracked("mlflow")
        task.recipe.train.keep_checkpoints = 2
        return task

    fit(tracked(), run_dir, max_steps=3)
    (first_id,) = read_tracker_ids(run_dir).values()
    fit(tracked(), run_dir, max_steps=6, resume=True)  # checkpoints at step 4 (the epoch's end) and 6
    # a kill after step 6 before its checkpoint was complete: the lost part logged steps 5 and 6
    shutil.rmtree(run_dir / "checkpoints" / "step_00000006")
    (run_dir / "checkpoints" / "latest").write_text("step_00000004")
    fit(tracked(), run_dir, resume=True)
    client, run = _mlflow_run(mlflow, run_dir)
    assert json.loads((run_dir / "trackers.json").read_text()) == {"mlflow": run.info.run_id} and run.info.run_id == first_id
    assert run.info.status == "FINISHED" and run.data.params["train.epochs"] == "2"
    whole_client, whole = _mlflow_run(mlflow, tmp_path / "whole")
    records = read_metrics(run_dir)  # every step once: the lost part's rows were dropped on resume
    for key, split in (("train/loss", None), ("train/lr", None), ("val/neg_mse", "val")):
        latest = dict(_latest_per_step(client, run.info.run_id, key))
        name = key.split("/")[1]
        assert [(r["step"], latest.pop(r["step"])) for r in records if r.get("split") == split] == \
            [(r["step"], r[name]) for r in records if r.get("split") == split]
        # MLflow cannot delete the lost part's points: the evaluation at its stop (step 6) stays, and its training
        # steps 5 and 6 hold two points each, the later the resumed run's
        assert list(latest) == ([] if split is None else [6])
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted({s for s in steps if steps.count(s) > 1}) == ([5, 6] if split is None else [])
        if split is None:  # and the training steps are an uninterrupted run's
            expected = sorted((m.step, m.value) for m in whole_client.get_metric_history(whole.info.run_id, key))
            assert _latest_per_step(client, run.info.run_id, key) == expected
    keys = ("train/loss", "train/lr", "val/neg_mse")  # MLflow's latest values: an uninterrupted run's
    assert {k: run.data.metrics[k] for k in keys} == {k: whole.data.metrics[k] for k in keys}


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


def _fake_module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # what find_spec reads from sys.modules
    module.__dict__.update(attributes)
    return module


def test_a_resumed_run_passes_wandb_its_run_id_and_tensorboard_the_purge_step(tmp_path, monkeypatch):
    """wandb and tensorboard are stood in for: what matters here is what accelerate's trackers are given."""
    inits, logged, writers = [], [], []

    def wandb_init(**kwargs):
        inits.append(kwargs)
        log = lambda values, step=None, **_: logged.append(step)  # noqa: E731
        return types.SimpleNamespace(id=kwargs.get("id", "w-first"), log=log, finish=lambda: None)

    class SummaryWriter:
        def __init__(self, logdir, **kwargs):
            writers.append((logdir, kwargs))

        def __getattr__(self, name):  # add_scalar, add_hparams, flush, close: nothing to keep
            return lambda *a, **k: None

    monkeypatch.setitem(sys.modules, "wandb", _fake_module("wandb", init=wandb_init, config=types.SimpleNamespace(
        update=lambda values, allow_val_change=False: None)))
    board = _fake_module("torch.utils.tensorboard", SummaryWriter=SummaryWriter)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", board)
    monkeypatch.setattr(torch.utils, "tensorboard", board, raising=False)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "tensorboard" else
                        find_spec(name, *a))
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = tmp_path / "run"

    def tracked():
        task = _tracked("wandb")
        task.recipe.train.tensorboard = True
        return task

    fit(tracked(), run, max_steps=3)
    assert json.loads((run / "trackers.json").read_text()) == {"wandb": "w-first"}
    fit(tracked(), run, resume=True)
    assert inits == [{"project": "dlcvkit", "name": "run", "dir": str(run)},
                     {"project": "dlcvkit", "name": "run", "dir": str(run), "id": "w-first", "resume": "allow"}]
    assert writers == [(str(run / "tensorboard"), {}), (str(run / "tensorboard"), {"purge_step": 4})]
    assert sorted(s for s in logged if s is not None) == [1, 2, 3, 3, 4, 4, 5, 6, 7, 8, 8]  # val at 3, 4, 8
    assert json.loads((run / "trackers.json").read_text()) == {"wandb": "w-first"}


@pytest.mark.parametrize("text", ["{not json", '["a list"]', '{"mlflow": 3}'])
def test_a_damaged_trackers_json_stops_the_resume_naming_it(tmp_path, text):
    (tmp_path / "trackers.json").write_text(text)
    with pytest.raises(DlcvkitError) as error:
        read_tracker_ids(tmp_path)
    assert str(error.value) == (f"--resume: {tmp_path / 'trackers.json'} does not hold the tracker run ids dlcvkit "
                                "writes; delete it to log the rest of the run to new MLflow and W&B runs")
    assert read_tracker_ids(tmp_path / "none") == {}


def test_resume_auto_continues_one_mlflow_run_every_step_once(tmp_path, capsys, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "recipe.toml").write_text(RECIPE)
    synth_cls(tmp_path / "data", n=16, size=16, classes=2)  # batch 8: 2 steps per epoch, 4 in all
    run = tmp_path / "run"
    command = ["classify", "-r", tmp_path / "recipe.toml", "--data", tmp_path / "data", "--out", run,
               "--resume", "auto", "--tracker", "mlflow", "--set", "data.batch_size=8"]
    for extra in (["--max-steps", 1], ["--max-steps", 3], []):  # a new run, then two requeues of one command line
        code, _, err = dlcvkit_here(capsys, *command, *extra)
        assert code == 0, err
    client, tracked = _mlflow_run(mlflow, run)
    assert json.loads((run / "trackers.json").read_text()) == {"mlflow": tracked.info.run_id}
    records = [r for r in read_metrics(run) if "split" not in r]
    for name in ("loss", "lr"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(tracked.info.run_id, f"train/{name}"))
        assert history == [(r["step"], r[name]) for r in records] and [s for s, _ in history] == [1, 2, 3, 4]


def test_a_recorded_mlflow_run_missing_from_the_store_is_replaced_by_a_new_one_with_a_note(tmp_path, capsys,
                                                                                          monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "run"
    fit(_tracked("mlflow"), run, max_steps=2)
    (first,) = read_tracker_ids(run).values()
    (folder,) = (run / "mlruns").glob(f"*/{first}")
    shutil.rmtree(folder)  # deleted from the store (or the store changed since the first start)
    (run / "trackers.json").write_text(json.dumps({"mlflow": first, "wandb": "kept"}))
    fit(_tracked("mlflow"), run, resume=True)
    _, tracked = _mlflow_run(mlflow, run)
    assert tracked.info.run_id != first
    assert json.loads((run / "trackers.json").read_text()) == {"mlflow": tracked.info.run_id, "wandb": "kept"}
    assert (f"dlcvkit: note: the MLflow run {first} of {run / 'trackers.json'} is not in the store "
            f"{(run / 'mlruns').resolve().as_uri()}: the rest of the run logs to a new MLflow run") in capsys.readouterr().err
