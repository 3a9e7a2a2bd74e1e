"""`dlcvkit bench ...`: throughput benchmarks; here those of one component (augment, ema, miou, loader), in
dlcvkit.cli.bench_runs those that run dlcvkit's commands (train, infer, all). A rich table on the
terminal and, with --json, the records as a JSON list. Defaults are the sizes of `dlcvkit.bench.suite.FULL`."""

from __future__ import annotations

from typing import Annotated

import typer

from dlcvkit.bench.session import begin, finish
from dlcvkit.bench.suite import FULL, SMOKE
from dlcvkit.cli.bench_options import bench_options
from dlcvkit.cli.bench_runs import all_, infer, train
from dlcvkit.cli.options import with_options

app = typer.Typer(help="Throughput benchmarks on this machine: a table, and JSON records with --json.",
                  epilog="Example: dlcvkit bench all --smoke", no_args_is_help=True)


_A, _T, _E, _M, _S, _I = (FULL[k] for k in ("augment", "train_timing", "ema", "miou", "eval_seg", "infer"))
_TR = FULL["train"][0]  # the BYOL case


@app.command()
@with_options(*bench_options(_A))
def augment(
    size: Annotated[list[int], typer.Option("--img-size", help="Image side (repeatable).")] = _A["sizes"],
    batch: Annotated[list[int], typer.Option("--batch-size", help="Batch size (repeatable).")] = _A["batches"],
    workers: Annotated[int, typer.Option("--workers", help="DataLoader workers of the torchvision contender.")]
    = _A["workers"],
    batches_per_repeat: Annotated[int, typer.Option("--batches-per-repeat", help="Batches per timed repeat.")]
    = _A["batches_per_repeat"],
    compile: Annotated[bool, typer.Option("--compile", help="Also time the kornia pipeline under torch.compile, "
                                                           "whole and with only its colour jitter compiled.")]
    = False,
    **options,
) -> None:
    """BYOL's two views: kornia on whole batches vs torchvision v2 per sample in DataLoader workers.

    Example: dlcvkit bench augment --img-size 128 --batch-size 256 --json augment.json
    """
    from dlcvkit.bench.augment import bench_augment

    run = begin(options)
    contenders = ("kornia", "torchvision") + ("kornia_compiled", "kornia_jitter_compiled") * compile
    finish(bench_augment(size, batch, device=run.device, workers=workers, batches_per_repeat=batches_per_repeat,
                         contenders=contenders, **run.timing), run)


@app.command()
@with_options(*bench_options(_E))
def ema(
    model: Annotated[str, typer.Option("--model", help="timm model whose parameters and buffers are averaged.")]
    = _E["model"],
    tau: Annotated[float, typer.Option("--tau", help="EMA decay.")] = _E["tau"],
    **options,
) -> None:
    """One EMA update: the engine's EMA vs timm's ModelEmaV3 vs a naive per-tensor loop (results checked).

    Example: dlcvkit bench ema --model resnet50 --device cuda
    """
    from dlcvkit.bench.ema import bench_ema

    run = begin(options)
    finish(bench_ema(model, tau=tau, device=run.device, **run.timing), run)


@app.command()
@with_options(*bench_options(_M, cache=True))
def miou(
    batch: Annotated[int, typer.Option("--batch-size", help="Masks per update.")] = _M["batch"],
    size: Annotated[int, typer.Option("--img-size", help="Mask side in pixels.")] = _M["size"],
    masks: Annotated[int, typer.Option("--masks", help="Mask pairs of the `eval seg` timing (0 = skip it).")]
    = _S["masks"],
    eval_repeats: Annotated[int, typer.Option("--eval-repeats", help="Timed repeats of `eval seg`.")]
    = _S["repeats"],
    **options,
) -> None:
    """Confusion accumulation (7 classes) vs torchmetrics and others (results checked); `eval seg` end to end.

    Example: dlcvkit bench miou --batch-size 8 --img-size 512
    """
    from dlcvkit.bench.miou import bench_eval_seg, bench_miou

    run = begin(options)
    records = bench_miou(batch=batch, size=size, classes=_M["classes"], device=run.device, **run.timing)
    if masks > 0:
        records += bench_eval_seg(run.cache, masks=masks, size=size, repeats=eval_repeats, warmup=_S["warmup"])
    finish(records, run)


@app.command()
@with_options(*bench_options(device=False, cache=True))
def loader(
    quick: Annotated[bool, typer.Option("--quick", help="Small images, few of them, one repeat: checks in seconds "
                                                        "that everything runs (figures meaningless).")] = False,
    **options,
) -> None:
    """Image files to uint8 batches: torchvision ImageFolder + PIL vs dlcvkit's decode, scaled decode and warm
    decoded-image cache, with 0 and 2 loader workers (Office-Home-like photos, P2 tiles, Mini-ImageNet).

    Example: dlcvkit bench loader --quick
    """
    from dlcvkit.bench.loader import bench_loader

    run = begin(options, device="cpu")
    finish(bench_loader(**(SMOKE if quick else FULL)["loader"], cache=run.cache), run)


for command in (train, infer):
    app.command()(command)
app.command("all")(all_)
