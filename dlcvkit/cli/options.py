"""The options that several commands share, each written once: training (recipe, data, run folder, `--set`,
resume, `--cache`), `--overwrite` of every command that writes, finished runs (`--weights best|last|ema`,
`--batch-size` 0 = the recipe's, `--workers` -1 = the recipe's), devices and JSON outputs; `with_options`, which
adds a list of them to a command; and `RENAMED`, the old spellings that still work. One name means one thing:
tests/cli/test_options.py compares every option of every command."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

RecipeOpt = Annotated[
    Optional[Path], typer.Option("--recipe", "-r", help="Recipe TOML, a run folder to copy its recipe, or the name of "
                                                        "a shipped recipe (`dlcvkit recipes` lists them).")
]
DataOpt = Annotated[Optional[Path], typer.Option("--data", help="Training data (sets data.train).")]
ValOpt = Annotated[Optional[Path], typer.Option("--val", help="Validation data (sets data.val).")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder to create (RUN_DIR).")]
SetOpt = Annotated[
    Optional[list[str]], typer.Option("--set", help="Override a recipe key, e.g. --set optim.lr=0.1 (repeatable).")
]
MaxStepsOpt = Annotated[
    int, typer.Option("--max-steps", help="Stop after N optimizer steps (0 = no limit); the LR and EMA "
                                               "schedules are unchanged.")
]
ResumeOpt = Annotated[
    Optional[Path], typer.Option("--resume", help="Continue the run in RUN_DIR from its latest checkpoint; `auto`: "
                                                  "continue the run in --out if it has a checkpoint, else start it "
                                                  "(one command line for the first start and every restart).")
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace existing outputs: files of the names this command writes (never an "
                                           "input), or the run in a dlcvkit run folder (only dlcvkit's files).")
]

SkipBadOpt = Annotated[
    bool, typer.Option("--skip-bad", help="Leave out images that cannot be decoded (all are decoded once first; "
                                          "how many were left out is printed).")
]
PredictSkipBadOpt = Annotated[
    bool, typer.Option("--skip-bad", help="Predict every image that decodes (all are decoded once first) and name "
                                          "the others at the end, with exit code 2: the output is incomplete.")
]


class CacheMode(str, Enum):
    none = "none"
    memory = "memory"
    disk = "disk"


CacheOpt = Annotated[
    Optional[CacheMode], typer.Option("--cache", help="Decode every image once (data.cache): memory (shared by the "
                                                      "loader workers) or disk (also kept for later runs, in the "
                                                      "recipe's data.cache_dir).")
]


def recipe_overrides(overrides: list[str] | None, cache: CacheMode | None, trackers: list | None = None) -> list[str]:
    """The --set overrides, with --cache as `data.cache` and --tracker as `train.trackers` if given."""
    extra = [f"data.cache={cache.value}"] if cache is not None else []
    if trackers:
        extra.append("train.trackers=[" + ", ".join(f'"{t.value}"' for t in trackers) + "]")
    return list(overrides or []) + extra


def choices(name: str, *values: str) -> type[Enum]:
    """An option type that takes one of `values` (Typer lists them in --help)."""
    return Enum(name, {v: v for v in values}, type=str)


Weights = choices("Weights", "best", "last", "ema")
Tracker = choices("Tracker", "tensorboard", "mlflow", "wandb")
TrackerOpt = Annotated[Optional[list[Tracker]], typer.Option(
    "--tracker", metavar="NAME", help="Also log to tracker NAME (train.trackers; repeatable): tensorboard, mlflow "
                                      "or wandb, each installed with the pip extra of its name.")]


WeightsOpt = Annotated[Weights, typer.Option(
    "--weights", help="best.safetensors (by the validation metric; else the last), model.safetensors (the last), "
                      "or ema.safetensors (the model EMA of train.model_ema).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images per forward pass and process (0 = the recipe's: "
                                                            "the run's, else dlcvkit's default).")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="DataLoader workers per process (-1 = the recipe's: the "
                                                           "run's, else dlcvkit's default).")]
JsonOpt = Annotated[Optional[Path], typer.Option("--json", help="Also write the results to this JSON file.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (a GPU if present), cpu, cuda or cuda:N.")]


def option(name: str, kind: Any, default: Any) -> inspect.Parameter:
    """A command parameter `name: kind = default`, for `with_options`."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind)


TRAINING = (
    option("recipe", RecipeOpt, None), option("data", DataOpt, None), option("val", ValOpt, None),
    option("out", OutOpt, None), option("set_", SetOpt, None), option("max_steps", MaxStepsOpt, 0),
    option("resume", ResumeOpt, None), option("overwrite", OverwriteOpt, False), option("cache", CacheOpt, None),
    option("tracker", TrackerOpt, None),
)
INFERENCE = (option("weights", WeightsOpt, Weights.best), option("batch_size", BatchOpt, 0),
             option("workers", WorkersOpt, -1))
OnnxOpt = Annotated[Optional[Path], typer.Option("--onnx", help="Instead of --run: a model from `dlcvkit export`, run "
                                                                "by onnxruntime on the CPU (seg: batches of 1 unless "
                                                                "--batch-size).")]
# what the `predict` commands add: the files they write and the model they may run instead of a run
PREDICTION = (*INFERENCE, option("onnx", OnnxOpt, None), option("skip_bad", PredictSkipBadOpt, False),
              option("overwrite", OverwriteOpt, False), option("cache", CacheOpt, None))


def inference(options: dict) -> dict:
    """The INFERENCE options of a command's `**options`, as the functions of `dlcvkit.runs` take them."""
    return {"weights": options["weights"].value, "batch_size": options["batch_size"],
            "num_workers": options["workers"]}


def prediction(options: dict) -> dict:
    """The PREDICTION options of a `predict` command's `**options` but --onnx, as `dlcvkit.runs` takes them."""
    cache = options["cache"]
    return inference(options) | {"skip_bad": options["skip_bad"], "overwrite": options["overwrite"],
                                 "cache": cache.value if cache else "none"}


def with_options(*shared: inspect.Parameter) -> Callable[[Callable], Callable]:
    """Decorator: the command takes `shared` after its own parameters (Typer reads the signature; they arrive in
    the command's `**options`)."""

    def add(command: Callable) -> Callable:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values()
               if p.kind is not inspect.Parameter.VAR_KEYWORD]
        command.__signature__ = inspect.Signature(own + list(shared))
        return command

    return add


# Old spellings, read as the new ones by Click's token normaliser (so each is one entry here, not a hidden option
# per command): scripts written for earlier versions keep working; --help shows only the new names.
RENAMED = {"--arch": "--model", "--batch": "--batch-size", "--images": "--data", "--size": "--img-size"}


def renamed(token: str) -> str:
    """An option name as the commands declare it now (Click passes it without its dashes; choice values pass
    through here too, and no choice is spelt like an old option)."""
    return RENAMED.get(f"--{token}", f"--{token}")[2:]
