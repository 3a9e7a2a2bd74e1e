"""The experiment trackers of a run, through accelerate's tracker API: TensorBoard, MLflow, W&B. Each is checked
before the run folder is made, so that a tracker that is not installed, a server that does not answer within
DLCVKIT_TRACKER_TIMEOUT seconds or a store that cannot be written stops the run with one line.

A resumed run continues its trackers' runs: a new run records the MLflow and W&B run ids in RUN_DIR/trackers.json,
and TensorBoard logs into RUN_DIR/tensorboard again, dropping the events a stopped part wrote after the checkpoint.
MLflow cannot delete metric points: a step that a killed part logged after its last checkpoint is logged again by
the resumed run, so its history holds two points at that step, the later one (by timestamp) the resumed run's;
the run's latest value is the resumed run's."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import socket
import sys
import urllib.parse
import urllib.request
from pathlib import Path

from accelerate.tracking import GeneralTracker, MLflowTracker, TensorBoardTracker, WandBTracker

from dlcvkit.config import TrainConfig
from dlcvkit.diskfull import write_atomic
from dlcvkit.errors import DlcvkitError
from dlcvkit.runnames import MLRUNS_DIR, TENSORBOARD_DIR, TRACKERS_FILE

PROJECT = "dlcvkit"  # the MLflow experiment and W&B project of every run; the run is named after its folder
MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}  # tracker -> module = pip extra
# W&B modes that never reach its server
WANDB_OFFLINE = ("offline", "dryrun", "disabled")


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
    for name in names:
        CHECKS[name](Path(run_dir))
    return [_tracker(name, Path(run_dir)) for name in names]


def tracker_timeout() -> float:
    """Seconds a tracker's server has to answer the check before the run (DLCVKIT_TRACKER_TIMEOUT, default 5)."""
    text = os.environ.get("DLCVKIT_TRACKER_TIMEOUT", "5")
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise DlcvkitError(f"DLCVKIT_TRACKER_TIMEOUT={text!r}: expected a number of seconds > 0, e.g. 5")
    return seconds


def _check_tensorboard(run_dir: Path) -> None:
    """RUN_DIR/tensorboard, where it already exists (a resumed run), must be a folder that can be written."""
    folder = run_dir / TENSORBOARD_DIR
    if folder.exists() and not (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)):
        raise DlcvkitError(f"train.trackers: TensorBoard logs to {folder}, which is not a writable folder; fix its "
                           "permissions, or turn TensorBoard off with --set train.tensorboard=false")


def _check_mlflow(run_dir: Path) -> None:
    """MLFLOW_TRACKING_URI (if set) names a store this run can use: a file store MLflow accepts and can write, or a
    server that answers a search within tracker_timeout() seconds (MLflow's own default waits minutes)."""
    uri = _user_tracking_uri()
    if uri is None:  # the run's own store, RUN_DIR/mlruns (see _tracker)
        return
    where = f"MLFLOW_TRACKING_URI={uri}"
    advice = "unset it to log into RUN_DIR/mlruns, or drop mlflow from train.trackers / --tracker"
    try:
        scheme = urllib.parse.urlparse(uri).scheme
    except ValueError as e:
        raise DlcvkitError(f"{where} is not a valid URI ({e}); {advice}") from None
    if scheme in ("", "file"):
        _check_mlflow_file_store(uri, where, advice)
        return
    from mlflow.tracking import MlflowClient

    seconds = tracker_timeout()
    try:
        with _environment(MLFLOW_HTTP_REQUEST_TIMEOUT=str(max(1, round(seconds))), MLFLOW_HTTP_REQUEST_MAX_RETRIES="0"):
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - any failure of the store (scheme, network, auth) stops the run here
        if scheme in ("http", "https") and (reason := _network_reason(e)):
            raise DlcvkitError(f"{where}: no MLflow server answered within {seconds:g} s ({reason}); start the "
                               f"server or fix the URI, or {advice}") from None
        supported = re.search(r"Supported URI schemes are: \[([^\]]*)\]", str(e))
        reason = (f"scheme '{scheme}' is not one it supports here: " + ", ".join(re.findall(r"'(\w[\w-]*)'",
                  supported.group(1))) if supported else _first_line(e))
        raise DlcvkitError(f"{where}: MLflow cannot use this tracking store ({reason}); {advice}") from None


def _check_mlflow_file_store(uri: str, where: str, advice: str) -> None:
    """A file store given by the user: MLflow 3 opens one only with MLFLOW_ALLOW_FILE_STORE=true, and its folder
    (or the nearest existing parent) must be writable."""
    from mlflow import environment_variables

    allowed = getattr(environment_variables, "MLFLOW_ALLOW_FILE_STORE", None)  # MLflow 3 and later
    if allowed is not None and not allowed.get():
        raise DlcvkitError(f"{where}: MLflow {_mlflow_version()} opens a file store only with "
                           f"MLFLOW_ALLOW_FILE_STORE=true; set it, point the URI at a server, or {advice}")
    parsed = urllib.parse.urlparse(uri)
    folder = Path(urllib.request.url2pathname(parsed.path) if parsed.scheme else uri).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise DlcvkitError(f"{where}: {existing} is not a writable folder; fix its permissions, choose another "
                           f"store, or {advice}")


def _check_wandb(run_dir: Path) -> None:
    """Online W&B (WANDB_MODE not offline) needs its server: one that does not take a connection within
    tracker_timeout() seconds stops the run here rather than after minutes of wandb's own retries."""
    mode = os.environ.get("WANDB_MODE", "online")
    if mode in WANDB_OFFLINE or os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1"):
        return
    url = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    seconds = tracker_timeout()
    try:
        parsed = urllib.parse.urlparse(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        if not parsed.hostname:
            raise ValueError("no host")
        socket.create_connection((parsed.hostname, port), timeout=seconds).close()
    except (OSError, ValueError) as e:
        raise DlcvkitError(f"train.trackers: W&B is online (WANDB_MODE={mode}) and its server {url} did not answer "
                           f"within {seconds:g} s ({_network_reason(e) or _first_line(e)}); set WANDB_MODE=offline to log into "
                           "RUN_DIR/wandb (`wandb sync` uploads it later), or check the network") from None


CHECKS = {"tensorboard": _check_tensorboard, "mlflow": _check_mlflow, "wandb": _check_wandb}


@contextlib.contextmanager
def _environment(**values: str):
    """Environment variables set for the duration of the block, then restored."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__


# what a failed request's long message means, in a few words (requests buries the cause in its text)
NETWORK_REASONS = (("refused", "connection refused"), ("timed out", "no answer"), ("NameResolution", "unknown host"),
                   ("Name or service not known", "unknown host"), ("Invalid URL", "invalid URL"))


def _network_reason(error: Exception) -> str:
    """Why a request got no answer, or "" where it got one (an error of the server: authentication, ...)."""
    text = str(error)
    return next((reason for marker, reason in NETWORK_REASONS if marker in text), "")


def _mlflow_version() -> str:
    import mlflow

    return mlflow.__version__


# The run stores (RUN_DIR/mlruns) this process has set: mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI, which
# must not make the next run of the process (a resume, the next finetune setting) log into this run's store.
OWN_STORES: set[str] = set()


def _user_tracking_uri() -> str | None:
    """MLFLOW_TRACKING_URI where the user set it, else None."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return None if uri in OWN_STORES else uri


def _tracker(name: str, run_dir: Path) -> GeneralTracker:
    if name == "tensorboard":
        return TensorBoardTracker(TENSORBOARD_DIR, run_dir)  # RUN_DIR/tensorboard/
    if name == "mlflow":
        if _user_tracking_uri() is None:  # no server configured: a store of the run's own, offline
            import mlflow

            # MLflow 3 keeps its file store only on request; a database store would need SQLAlchemy
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            OWN_STORES.add((run_dir / MLRUNS_DIR).resolve().as_uri())
            mlflow.set_tracking_uri((run_dir / MLRUNS_DIR).resolve().as_uri())
        return MLflowTracker(PROJECT, run_name=run_dir.name)
    return WandBTracker(PROJECT, name=run_dir.name, dir=str(run_dir))  # WANDB_MODE=offline: RUN_DIR/wandb/


def start_trackers(accelerator, run_dir: Path, config: dict, resumed_step: int | None = None) -> None:
    """Start the trackers and log `config` (the flat recipe). A new run (`resumed_step` None) then records the
    MLflow and W&B run ids in RUN_DIR/trackers.json; a run resumed from the checkpoint at `resumed_step` continues
    the recorded runs (W&B with resume="allow") and purges TensorBoard's events after that step."""
    ids = read_tracker_ids(run_dir) if resumed_step is not None else {}
    for tracker in accelerator.log_with:
        if tracker.name == "mlflow" and "MLFLOW_RUN_ID" not in os.environ and accelerator.is_main_process:
            tracker.run_id = _mlflow_run(ids.get("mlflow"), run_dir)  # MLFLOW_RUN_ID, the user's choice, wins
        elif tracker.name == "wandb" and "wandb" in ids:
            tracker.init_kwargs.update(id=ids["wandb"], resume="allow")
        elif tracker.name == "tensorboard" and resumed_step is not None:
            tracker.init_kwargs["purge_step"] = resumed_step + 1
    accelerator.init_trackers(PROJECT)
    if not accelerator.is_main_process:
        return
    for tracker in accelerator.trackers:
        known = tracker.active_run.data.params if tracker.name == "mlflow" else {}
        # MLflow refuses to change a param: a resumed run keeps its first start's values of RESUME_SAFE_KEYS
        tracker.store_init_configuration({k: v for k, v in config.items() if k not in known})
    started = {t.name: t.active_run.info.run_id if t.name == "mlflow" else t.run.id
               for t in accelerator.trackers if t.name in ("mlflow", "wandb")}
    if (recorded := {**ids, **started}) != ids:
        write_atomic(Path(run_dir) / TRACKERS_FILE, json.dumps(recorded, indent=2) + "\n")


def read_tracker_ids(run_dir: Path) -> dict[str, str]:
    """The run ids that RUN_DIR/trackers.json records ({} where it does not exist)."""
    path = Path(run_dir) / TRACKERS_FILE
    try:
        ids = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        ids = e
    if not (isinstance(ids, dict) and all(isinstance(v, str) for v in ids.values())):
        raise DlcvkitError(f"--resume: {path} does not hold the tracker run ids dlcvkit writes; delete it to log "
                           "the rest of the run to new MLflow and W&B runs")
    return ids


def _mlflow_run(run_id: str | None, run_dir: Path) -> str | None:
    """`run_id` where the tracking store holds it as an active run, else None (a new run) with a note: a store
    changed since the run started (MLFLOW_TRACKING_URI) or a deleted run cannot be continued."""
    if run_id is None:
        return None
    import mlflow

    try:
        if mlflow.tracking.MlflowClient().get_run(run_id).info.lifecycle_stage == "active":
            return run_id
    except Exception:  # noqa: BLE001 - not found, or a store that lost its folders (a plain Exception): a new run
        pass
    print(f"dlcvkit: note: the MLflow run {run_id} of {Path(run_dir) / TRACKERS_FILE} is not in the store "
          f"{mlflow.get_tracking_uri()}: the rest of the run logs to a new MLflow run", file=sys.stderr, flush=True)
    return None


def finish_trackers(accelerator) -> None:
    """Close the trackers. Not `accelerator.end_training()`: it also destroys the process group, and one launch
    may run several trainings (the demo, fine-tuning settings A–E); that happens once at exit instead."""
    for tracker in accelerator.trackers:
        tracker.finish()
