"""Recipes: typed dataclasses loaded from TOML, `--set key=value` overrides, and the resolved recipe of a run.

The sections every task shares live here (data, optim, schedule, train); each task adds its own sections
(`model`, `aug`, ...) by subclassing `Recipe` in its module under `dlcvkit.tasks`. Defaults live in these
dataclasses and nowhere else; what the training data decides is filled in by the Task's `resolve`, before it is built.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w

from dlcvkit.errors import DlcvkitError, did_you_mean
from dlcvkit.recipes import find as find_recipe
from dlcvkit.runnames import RECIPE_FILE


@dataclass
class DataConfig:
    """Where the data is and how it is batched."""

    train: str = ""  # training data: a folder or a CSV, read by the task's reader
    val: str = ""  # validation data ("" = no validation)
    layout: str = "auto"  # reader layout where a task accepts several (see dlcvkit.data.labeled.open_labeled)
    img_size: int = 64  # images are decoded and resized to img_size x img_size in the loader workers
    batch_size: int = 64  # GLOBAL batch per forward pass, split evenly across processes
    eval_batch_size: int = 0  # per-process evaluation batch (0 = batch_size)
    num_workers: int = 2  # DataLoader workers per process (none with data.cache: the main process reads it)
    skip_bad: bool = False  # decode every image once at the start and leave out those that fail (reported)
    # decode and resize every sample once (in the loader workers), then read slices: "memory" (shared memory) or
    # "disk" (kept for later runs and shared by the processes of a run; see dlcvkit.data.cache)
    cache: Literal["none", "memory", "disk"] = "none"
    cache_dir: str = ""  # folder of the disk cache ("" = $XDG_CACHE_HOME/dlcvkit/decoded or ~/.cache/...)


@dataclass
class OptimConfig:
    """The optimizer, built by `timm.optim.create_optimizer_v2`."""

    name: str = "adamw"  # any timm optimizer name: adamw, adam, sgd, momentum, lars, lamb, ...
    lr: float = 1e-3  # base LR (before `lr_scaling`)
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd / lars
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam-style optimizers
    lr_scaling: Literal["none", "linear"] = "none"  # linear: lr x (batch_size x grad_accum) / 256 (BYOL §3.1)
    decay_bias_and_norm: bool = False  # False: biases and norm weights get no weight decay (nor LARS adaptation)


@dataclass
class ScheduleConfig:
    """Per-step LR: linear warm-up, then decay to a floor (see dlcvkit.engine.schedule.lr_factor)."""

    warmup_steps: int = 0
    warmup_epochs: float = 0.0  # alternative to warmup_steps; set at most one of them
    decay: Literal["cosine", "poly", "constant"] = "cosine"
    min_lr_ratio: float = 0.0  # floor of the decay, as a fraction of the base LR
    power: float = 1.0  # exponent of the poly decay


@dataclass
class TrainConfig:
    """How the engine runs the loop."""

    epochs: int = 10
    grad_accum: int = 1  # micro-batches per optimizer step
    clip_grad_norm: float = 0.0  # 0 = no clipping
    precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms (bit-exact resume on GPU)
    channels_last: bool = False
    compile: bool = False  # torch.compile the model
    sync_bn: bool = True  # SyncBatchNorm when running on more than one process
    model_ema: float = 0.0  # tau of an EMA copy of the model evaluated beside it (0 = off)
    log_every: int = 10  # optimizer steps between logged training losses (the only host syncs of the loop)
    eval_every: int = 1  # epochs between evaluations (0 = only at the end)
    ckpt_every: int = 0  # optimizer steps between checkpoints (0 = at the end of each epoch only)
    keep_checkpoints: int = 2  # the newest K checkpoints are kept in RUN_DIR/checkpoints
    # "auto": continue from the newest complete checkpoint in the run folder if there is one, else start the run
    # (as --resume auto; one command line then serves the first start and every restart)
    resume: Literal["", "auto"] = ""
    tensorboard: bool = True  # also log to TensorBoard when it is installed
    # trackers that must log the run (through accelerate; each needs its pip extra): RUN_DIR/tensorboard,
    # MLflow (MLFLOW_TRACKING_URI, else the store RUN_DIR/mlruns), W&B (WANDB_MODE=offline works offline)
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = field(default_factory=list)
    progress_seconds: float = 30.0  # without a terminal (a log file): seconds between plain progress lines
    threads: int = 0  # torch intra-op threads per process (0 = OMP_NUM_THREADS, else this node's cores / processes)
    cpu: bool = False  # force the CPU even when a GPU is present


@dataclass
class Recipe:
    """A whole run. Tasks subclass it to add their own sections."""

    task: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


R = typing.TypeVar("R", bound=Recipe)


def load_recipe(path: str | Path, cls: type[R], overrides: list[str] = ()) -> R:
    """Read a TOML recipe (a file, a run folder, or a shipped recipe's name) into `cls`, apply `key=value`
    overrides, and check that it is for `cls`'s task."""
    path = find_recipe(Path(path))
    if path.is_dir():
        path = path / RECIPE_FILE
    raw = _read_toml(path)
    expected = cls().task
    if expected and raw.get("task", expected) != expected:  # before its keys are read: theirs are another task's
        raise DlcvkitError(f"recipe {path} is for task '{raw['task']}', not '{expected}'")
    recipe = from_dict(cls, raw, where=str(path))
    for item in overrides:
        apply_override(recipe, item)
    if expected and recipe.task != expected:
        raise DlcvkitError(f"recipe {path} is for task '{recipe.task}', not '{expected}'")
    check_ranges(recipe, f"{path} with --set" if overrides else str(path))
    return recipe


# Bounds (inclusive; None = open) of the keys whose type alone does not make them valid; a task's keys apply to
# the recipes that have them, a list's bounds to each of its items. The upper bounds of the values that size
# memory (images, batches, workers, widths) are far above any real run: past them a run would only end in an
# allocator's error after its folder was made.
RANGES = {
    "data.img_size": (1, 8192), "data.batch_size": (1, 65536), "data.eval_batch_size": (0, 65536),
    "data.num_workers": (0, 256),
    "optim.lr": (0, None), "optim.weight_decay": (0, None),
    "schedule.warmup_steps": (0, None), "schedule.warmup_epochs": (0, None), "schedule.min_lr_ratio": (0, 1),
    "train.epochs": (1, None), "train.grad_accum": (1, None), "train.clip_grad_norm": (0, None),
    "train.model_ema": (0, 1), "train.log_every": (1, None), "train.eval_every": (0, None),
    "train.ckpt_every": (0, None), "train.keep_checkpoints": (1, None), "train.progress_seconds": (0, None),
    "train.threads": (0, None),
    # classify / finetune
    "model.num_classes": (0, 1_000_000), "model.head": (1, 65536), "model.grid": (1, 64),
    "model.input_size": (1, 8192),
    # byol
    "model.projection_hidden": (1, 65536), "model.projection_dim": (1, 65536), "model.prediction_hidden": (1, 65536),
    # dino
    "model.out_dim": (1, 1_000_000), "model.hidden": (1, 65536), "model.bottleneck": (1, 65536),
    "model.freeze_last_layer": (0, None), "model.student_temp": (1e-4, None), "model.teacher_temp": (1e-4, None),
    "model.warmup_teacher_temp": (1e-4, None), "model.warmup_teacher_temp_epochs": (0, None),
    "model.center_momentum": (0, 1), "aug.local_crops": (0, 64), "aug.local_size": (0, 8192),
    # simclr (model.projection_* above); the jitter's hue 0.2s must stay within kornia's 0.5
    "model.temperature": (1e-3, 100), "aug.strength": (0, 2.5), "aug.blur_p": (0, 1),
    # segment
    "model.fcn_width": (1, 65536),
}


def check_ranges(recipe: Recipe, where: str) -> None:
    """Raise a DlcvkitError naming the first key of RANGES whose value is outside its bounds (or NaN)."""
    for key, (low, high) in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(recipe, section, None), name, None)
        for index, item in enumerate(value if isinstance(value, list) else [value] if value is not None else []):
            if not ((low is None or item >= low) and (high is None or item <= high)):
                bounds = f"at least {low}" if high is None else f"between {low} and {high}"
                shown = f"{key}[{index}]" if isinstance(value, list) else key
                raise DlcvkitError(f"{where}: recipe key '{shown}' must be {bounds}, got {item!r}")


# Old spellings of recipe keys, read as the new ones (in TOML and --set), so that the recipes of earlier runs and
# scripts keep working; a recipe is always written with the new names.
RENAMED_KEYS = {"train.keep_last": "train.keep_checkpoints"}


def from_dict(cls: type, raw: dict, where: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from a (nested) dict, rejecting unknown keys and values of the wrong type."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        key = RENAMED_KEYS.get(f"{prefix}{key}", f"{prefix}{key}").removeprefix(prefix)
        if key not in hints:
            section = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
            raise DlcvkitError(
                f"{where}: unknown recipe key '{prefix}{key}'{did_you_mean(key, names, prefix)}; "
                f"valid keys in {section}: {', '.join(names)}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}", where)
    return cls(**kwargs)


def apply_override(recipe: Recipe, item: str) -> None:
    """Apply one `--set section.key=value` (value in TOML syntax; bare words are strings)."""
    if "=" not in item:
        raise DlcvkitError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=0.1")
    key, text = (s.strip() for s in item.split("=", 1))
    key = RENAMED_KEYS.get(key, key)
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # an unquoted string such as a path
    *parents, leaf = key.split(".")
    node, prefix = recipe, ""
    for part in parents:
        _check_key(node, part, prefix, f"--set {key}")
        node, prefix = getattr(node, part), f"{prefix}{part}."
        if not dataclasses.is_dataclass(node):
            raise DlcvkitError(f"--set {key}: '{prefix.rstrip('.')}' is a value, not a section")
    _check_key(node, leaf, prefix, f"--set {key}")
    hint = typing.get_type_hints(type(node))[leaf]
    if dataclasses.is_dataclass(getattr(node, leaf)):
        raise DlcvkitError(f"--set {key}: '{key}' is a section; set one of its keys, e.g. {key}.<name>=...")
    setattr(node, leaf, _coerce(value, hint, key, "--set"))


def _check_key(node: Any, name: str, prefix: str, where: str) -> None:
    names = [f.name for f in dataclasses.fields(node)]
    if name not in names:
        section = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
        valid = ", ".join(f"{prefix}{n}" for n in names)
        raise DlcvkitError(
            f"{where}: unknown recipe key '{prefix}{name}'{did_you_mean(name, names, prefix)}; "
            f"valid keys in {section}: {valid}"
        )


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    """Return `value` as type `hint`, or raise a DlcvkitError naming the key and the expected type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)

    def wrong(expected: str) -> DlcvkitError:
        return DlcvkitError(f"{where}: recipe key '{key}' must be {expected}, got {value!r}")

    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise wrong(f"a table [{key}]")
        return from_dict(hint, value, where, prefix=f"{key}.")
    if origin is Literal:
        if value not in args:
            raise wrong("one of " + ", ".join(repr(a) for a in args))
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise wrong("a list")
        return [_coerce(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise wrong("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong("an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise wrong("a string")
        return value
    raise TypeError(f"unsupported recipe type {hint!r} for {key}")  # a programming error, not user input


def recorded_recipe(run_dir: Path, option: str = "") -> dict:
    """RUN_DIR/recipe.toml as plain data (`option`: what named RUN_DIR): read before, or instead of, loading it as
    its Task's recipe, so that a run of another task is named as such and a report needs none of the tasks' code."""
    path = Path(run_dir) / RECIPE_FILE
    if not path.is_file():
        where = f"{option} {run_dir}" if option else str(run_dir)
        raise DlcvkitError(f"{where}: not a dlcvkit run folder (no {RECIPE_FILE})")
    return _read_toml(path)


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise DlcvkitError(f"recipe {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise DlcvkitError(f"recipe {path} is not valid TOML: {e}") from None


def recipe_to_dict(recipe: Recipe) -> dict:
    """The recipe as plain TOML-ready data (top-level values first, then one table per section)."""
    data = dataclasses.asdict(recipe)
    return dict(sorted(data.items(), key=lambda kv: isinstance(kv[1], dict)))


def write_recipe(recipe: Recipe, path: str | Path) -> None:
    """Write the fully resolved recipe, so `--recipe RUN_DIR/recipe.toml` reproduces the run."""
    Path(path).write_text(tomli_w.dumps(recipe_to_dict(recipe)))


def flat_recipe(recipe: Recipe) -> dict[str, Any]:
    """{dotted key: value} of the recipe, lists as text: the hyperparameters a tracker records."""
    return {k: str(v) if isinstance(v, list) else v for k, v in _flatten(recipe_to_dict(recipe)).items()}


def recipe_differences(a: Recipe, b: Recipe, ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ between two recipes of the same class."""
    flat_a, flat_b = _flatten(recipe_to_dict(a)), _flatten(recipe_to_dict(b))
    return [k for k in flat_a if flat_a[k] != flat_b.get(k) and not k.startswith(ignore)]


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
