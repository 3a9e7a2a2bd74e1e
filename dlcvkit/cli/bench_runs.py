"""The benchmarks that run dlcvkit's own commands end to end: `dlcvkit bench train`, `infer` and `all` (every
benchmark at the sizes of dlcvkit.bench.suite); registered on the `bench` group by dlcvkit.cli.bench."""

from __future__ import annotations

from typing import Annotated

import typer

from dlcvkit.bench.session import begin, finish
from dlcvkit.bench.suite import FULL
from dlcvkit.cli.bench_options import ImgSizeOpt, ModelOpt, Precision, PrecisionOpt, SegmenterOpt, bench_options
from dlcvkit.cli.options import choices, with_options

Task, InferTask = choices("Task", "byol", "cls", "seg"), choices("InferTask", "seg", "cls")
_T, _I = FULL["train_timing"], FULL["infer"]
_TR = FULL["train"][0]  # the BYOL case
_TASK = Task(_TR["task"])


@with_options(*bench_options(_T, device=False, cache=True))
def train(
    task: Annotated[Task, typer.Option("--task", help="byol, cls or seg.")] = _TASK,
    model: ModelOpt = _TR["model"],
    segmenter: SegmenterOpt = "fcn8s",
    img_size: ImgSizeOpt = _TR["img_size"],
    batch: Annotated[int, typer.Option("--batch-size", help="Batch size.")] = _TR["batch"],
    precision: PrecisionOpt = Precision.fp32,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="Channels-last model.")] = False,
    interval: Annotated[int, typer.Option("--interval", help="Optimizer steps per timed repeat (train.log_every).")]
    = _T["interval"],
    workers: Annotated[int, typer.Option("--workers", help="Loader workers of the dlcvkit_loader run.")]
    = _T["workers"],
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    **options,
) -> None:
    """The engine's training step vs a bare PyTorch loop (overhead in %), and the data wait of a real run.

    Example: dlcvkit bench train --task seg --model resnet18 --img-size 64 --batch-size 8
    """
    from dlcvkit.bench.train import bench_train

    run = begin(options)
    finish(bench_train(task.value, model, img_size=img_size, batch=batch, cache=run.cache, segmenter=segmenter,
                       precision=precision.value, channels_last=channels_last, compile=compile, interval=interval,
                       workers=workers, **run.timing), run)


@with_options(*bench_options(_I, device=False, cache=True))
def infer(
    task: Annotated[InferTask, typer.Option("--task", help="seg: `predict seg` (masks); cls: `predict cls` "
                                                           "(a CSV; --segmenter unused).")] = InferTask.seg,
    segmenter: SegmenterOpt = _I["segmenter"],
    model: ModelOpt = _I["backbone"],
    images: Annotated[int, typer.Option("--images", help="Images per repeat.")] = _I["images"],
    img_size: ImgSizeOpt = _I["img_size"],
    batch: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = _I["batch"],
    workers: Annotated[int, typer.Option("--workers", help="Decoding workers.")] = _I["workers"],
    precision: PrecisionOpt = Precision.fp32,
    **options,
) -> None:
    """`dlcvkit predict seg` or `predict cls` images/s end to end, and the model's forward pass alone.

    Example: dlcvkit bench infer --segmenter fcn8s --img-size 512 --batch-size 8
    """
    from dlcvkit.bench.infer import bench_infer

    run = begin(options)
    finish(bench_infer(segmenter, model, images=images, img_size=img_size, batch=batch, workers=workers,
                       precision=precision.value, cache=run.cache, task=task.value, **run.timing), run)


@with_options(*bench_options(cache=True))
def all_(
    smoke: Annotated[bool, typer.Option("--smoke", help="Toy sizes: checks that everything runs, figures "
                                                        "meaningless.")] = False,
    **options,
) -> None:
    """Every benchmark at the sizes of dlcvkit.bench.suite (under 10 minutes on a 2-core CPU).

    Example: dlcvkit bench all --json results.json
    """
    from dlcvkit.bench.suite import SMOKE, run_suite

    run = begin(options)
    finish(run_suite(SMOKE if smoke else FULL, run.device, run.cache), run)
