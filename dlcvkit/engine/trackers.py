"""The experiment trackers of a run, through accelerate's tracker API: TensorBoard, MLflow, W&B. Each is checked
before the run folder is made, so that a tracker that is not installed, a server that does not answer within
DLCVKIT_TRACKER_TIMEOUT seconds or a store that cannot be written stops the run with one line."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import socket
import urllib.parse
import urllib.request
from pathlib import Path

from accelerate.tracking import GeneralTracker, MLflowTracker, TensorBoardTracker, WandBTracker

from dlcvkit.config import TrainConfig
from dlcvkit.errors import DlcvkitError
from dlcvkit.runnames import MLRUNS_DIR, TENSORBOARD_DIR

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
    uri = os.environ.get("MLFLOW_TRACKING_URI")
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


def _tracker(name: str, run_dir: Path) -> GeneralTracker:
    if name == "tensorboard":
        return TensorBoardTracker(TENSORBOARD_DIR, run_dir)  # RUN_DIR/tensorboard/
    if name == "mlflow":
        if "MLFLOW_TRACKING_URI" not in os.environ:  # no server configured: a store of the run's own, offline
            import mlflow

            # MLflow 3 keeps its file store only on request; a database store would need SQLAlchemy
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((run_dir / MLRUNS_DIR).resolve().as_uri())
        return MLflowTracker(PROJECT, run_name=run_dir.name)
    return WandBTracker(PROJECT, name=run_dir.name, dir=str(run_dir))  # WANDB_MODE=offline: RUN_DIR/wandb/


def finish_trackers(accelerator) -> None:
    """Close the trackers. Not `accelerator.end_training()`: it also destroys the process group, and one launch
    may run several trainings (the demo, fine-tuning settings A–E); that happens once at exit instead."""
    for tracker in accelerator.trackers:
        tracker.finish()
