"""`dlcvkit bench ...`: throughput benchmarks (augment, train, ema, miou, infer, loader, all); a rich table on the
terminal and, with --json, the records as a JSON list. Defaults are the sizes of `dlcvkit.bench.suite.FULL`."""

from __future__ import annotations

from typing import Annotated

import typer

from dlcvkit.bench.session import begin, finish
from dlcvkit.bench.suite import FULL, SMOKE, run_suite
from dlcvkit.cli.options import (
    ImgSizeOpt,
    ModelOpt,
    Precision,
    PrecisionOpt,
    SegmenterOpt,
    bench_options,
    choices,
    with_options,
)

app = typer.Typer(help="Throughput benchmarks on this machine: a table, and JSON records with --json.",
                  no_args_is_help=True)


Task, InferTask = choices("Task", "byol", "cls", "seg"), choices("InferTask", "seg")


_A, _T, _E, _M, _S, _I = (FULL[k] for k in ("augment", "train_timing", "ema", "miou", "eval_seg", "infer"))
_TR = FULL["train"][0]  # the BYOL case


@app.command()
@with_options(*bench_options(_A))
def augment(
    size: Annotated[list[int], typer.Option("--size", help="Image side (repeatable).")] = _A["sizes"],
    batch: Annotated[list[int], typer.Option("--batch", help="Batch size (repeatable).")] = _A["batches"],
    workers: Annotated[int, typer.Option("--workers", help="DataLoader workers of the torchvision contender.")]
    = _A["workers"],
    batches_per_repeat: Annotated[int, typer.Option("--batches-per-repeat", help="Batches per timed repeat.")]
    = _A["batches_per_repeat"],
    compile: Annotated[bool, typer.Option("--compile", help="Also time the kornia pipeline under torch.compile.")]
    = False,
    **options,
) -> None:
    """BYOL's two views: kornia on whole batches vs torchvision v2 per sample in DataLoader workers."""
    from dlcvkit.bench.augment import bench_augment

    run = begin(options)
    contenders = ("kornia", "torchvision") + ("kornia_compiled",) * compile
    finish(bench_augment(size, batch, device=run.device, workers=workers, batches_per_repeat=batches_per_repeat,
                         contenders=contenders, **run.timing), run)


@app.command()
@with_options(*bench_options(_T, device=False, cache=True))
def train(
    task: Annotated[Task, typer.Option("--task", help="byol, cls or seg.")] = Task(_TR["task"]),
    model: ModelOpt = _TR["model"],
    segmenter: SegmenterOpt = "fcn8s",
    img_size: ImgSizeOpt = _TR["img_size"],
    batch: Annotated[int, typer.Option("--batch", help="Batch size.")] = _TR["batch"],
    precision: PrecisionOpt = Precision.fp32,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="Channels-last model.")] = False,
    interval: Annotated[int, typer.Option("--interval", help="Optimizer steps per timed repeat (train.log_every).")]
    = _T["interval"],
    workers: Annotated[int, typer.Option("--workers", help="Loader workers of the dlcvkit_loader run.")]
    = _T["workers"],
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    **options,
) -> None:
    """The engine's training step vs a bare PyTorch loop (overhead in %), and the data wait of a real run."""
    from dlcvkit.bench.train import bench_train

    run = begin(options)
    finish(bench_train(task.value, model, img_size=img_size, batch=batch, cache=run.cache, segmenter=segmenter,
                       precision=precision.value, channels_last=channels_last, compile=compile, interval=interval,
                       workers=workers, **run.timing), run)


@app.command()
@with_options(*bench_options(_E))
def ema(
    model: Annotated[str, typer.Option("--model", help="timm model whose parameters and buffers are averaged.")]
    = _E["model"],
    tau: Annotated[float, typer.Option("--tau", help="EMA decay.")] = _E["tau"],
    **options,
) -> None:
    """One EMA update: the engine's EMA vs timm's ModelEmaV3 vs a naive per-tensor loop (results checked)."""
    from dlcvkit.bench.ema import bench_ema

    run = begin(options)
    finish(bench_ema(model, tau=tau, device=run.device, **run.timing), run)


@app.command()
@with_options(*bench_options(_M, cache=True))
def miou(
    batch: Annotated[int, typer.Option("--batch", help="Masks per update.")] = _M["batch"],
    size: Annotated[int, typer.Option("--size", help="Mask side in pixels.")] = _M["size"],
    masks: Annotated[int, typer.Option("--masks", help="Mask pairs of the `eval seg` timing (0 = skip it).")]
    = _S["masks"],
    eval_repeats: Annotated[int, typer.Option("--eval-repeats", help="Timed repeats of `eval seg`.")]
    = _S["repeats"],
    **options,
) -> None:
    """Confusion accumulation (7 classes) vs torchmetrics and others (results checked); `eval seg` end to end."""
    from dlcvkit.bench.miou import bench_eval_seg, bench_miou

    run = begin(options)
    records = bench_miou(batch=batch, size=size, classes=_M["classes"], device=run.device, **run.timing)
    if masks > 0:
        records += bench_eval_seg(run.cache, masks=masks, size=size, repeats=eval_repeats, warmup=_S["warmup"])
    finish(records, run)


@app.command()
@with_options(*bench_options(_I, device=False, cache=True))
def infer(
    task: Annotated[InferTask, typer.Option("--task", help="seg (the only inference benchmark so far).")]
    = InferTask.seg,
    segmenter: SegmenterOpt = _I["segmenter"],
    model: ModelOpt = _I["backbone"],
    images: Annotated[int, typer.Option("--images", help="Images per repeat.")] = _I["images"],
    img_size: ImgSizeOpt = _I["img_size"],
    batch: Annotated[int, typer.Option("--batch", help="Images per forward pass.")] = _I["batch"],
    workers: Annotated[int, typer.Option("--workers", help="Decoding workers.")] = _I["workers"],
    precision: PrecisionOpt = Precision.fp32,
    **options,
) -> None:
    """`dlcvkit predict seg` images/s end to end, and the model's forward pass alone."""
    from dlcvkit.bench.infer import bench_infer

    run = begin(options)
    finish(bench_infer(segmenter, model, images=images, img_size=img_size, batch=batch, workers=workers,
                       precision=precision.value, cache=run.cache, **run.timing), run)


@app.command()
@with_options(*bench_options(device=False, cache=True))
def loader(
    quick: Annotated[bool, typer.Option("--quick", help="Small images, few of them, one repeat: checks in seconds "
                                                        "that everything runs (figures meaningless).")] = False,
    **options,
) -> None:
    """Image files to uint8 batches: torchvision ImageFolder + PIL vs dlcvkit's decode, scaled decode and warm
    decoded-image cache, with 0 and 2 loader workers (Office-Home-like photos, P2 tiles, Mini-ImageNet)."""
    from dlcvkit.bench.loader import bench_loader

    run = begin(options, device="cpu")
    finish(bench_loader(**(SMOKE if quick else FULL)["loader"], cache=run.cache), run)


@app.command("all")
@with_options(*bench_options(cache=True))
def all_(
    smoke: Annotated[bool, typer.Option("--smoke", help="Toy sizes: checks that everything runs, figures "
                                                        "meaningless.")] = False,
    **options,
) -> None:
    """Every benchmark at the sizes of dlcvkit.bench.suite (under 10 minutes on a 2-core CPU)."""
    run = begin(options)
    finish(run_suite(SMOKE if smoke else FULL, run.device, run.cache), run)
