"""`dlcvkit bench ...`: throughput benchmarks (augment, train, ema, miou, infer, loader, all, gpu); a rich table on the
terminal and, with --json, the records as a JSON list. Defaults are the sizes of `dlcvkit.bench.suite.FULL`."""

from __future__ import annotations

import sys
import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlcvkit.bench.suite import FULL, REFERENCES, SMOKE
from dlcvkit.cli.common import OverwriteOpt

app = typer.Typer(help="Throughput benchmarks on this machine: a table, and JSON records with --json.",
                  no_args_is_help=True)

JsonOpt = Annotated[Optional[Path], typer.Option("--json", help="Also write the records (a JSON list) to this file.")]
RepeatsOpt = Annotated[int, typer.Option("--repeats", help="Timed repeats (the median and spread are reported).")]
WarmupOpt = Annotated[int, typer.Option("--warmup", help="Untimed repeats first.")]
ThreadsOpt = Annotated[int, typer.Option("--threads", help="torch intra-op threads (0 = one per core).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (a GPU if present), cpu or cuda.")]
CacheOpt = Annotated[
    Optional[Path], typer.Option("--cache", help="Folder for the synthetic data (kept between runs) and "
                                                 "scratch runs (default: TMPDIR/dlcvkit-bench).")
]


class Task(str, Enum):
    byol = "byol"
    cls = "cls"
    seg = "seg"


class InferTask(str, Enum):
    seg = "seg"


class GpuSize(str, Enum):
    full = "full"
    tiny = "tiny"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


def _console():
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 150)  # piped or logged: do not squeeze to 80 columns


def _start(threads: int, json_path: Path | None, overwrite: bool, device: str = "auto", cache: Path | None = None):
    """Check the --json file (before minutes of timing), set the threads, print the machine; (device, machine
    info, cache folder)."""
    from dlcvkit.bench.report import print_header
    from dlcvkit.bench.timing import machine, pick_device, set_threads
    from dlcvkit.engine.rundir import check_own_folder, mark_folder
    from dlcvkit.outputs import check_output_file

    if json_path is not None:
        check_output_file(json_path, "--json", overwrite)
    if cache is not None:  # the benchmarks write and delete their own sub-folders there
        check_own_folder(cache, "--cache")
    set_threads(threads)
    dev = pick_device(device)
    info = machine(dev)
    print_header(_console(), info)
    cache = cache or Path(tempfile.gettempdir()) / "dlcvkit-bench"
    mark_folder(cache)
    return dev, info, cache


def _finish(records: list[dict], info: dict, json_path: Path | None) -> None:
    from dlcvkit.bench.report import print_goals, print_table, write_json
    from dlcvkit.bench.timing import add_speedups, load_average

    add_speedups(records, REFERENCES)
    console = _console()
    print_table(console, records)
    print_goals(console, records)
    console.print(f"load average after: {load_average():.2f} (includes this benchmark's own work)", highlight=False)
    if json_path is not None:
        write_json(json_path, records, info)
        console.print(f"wrote {len(records)} records to {json_path}", highlight=False)


_A, _T, _E, _M, _S, _I = (FULL[k] for k in ("augment", "train_timing", "ema", "miou", "eval_seg", "infer"))
_TR = FULL["train"][0]  # the BYOL case


@app.command()
def augment(
    size: Annotated[list[int], typer.Option("--size", help="Image side (repeatable).")] = _A["sizes"],
    batch: Annotated[list[int], typer.Option("--batch", help="Batch size (repeatable).")] = _A["batches"],
    workers: Annotated[int, typer.Option("--workers", help="DataLoader workers of the torchvision contender.")]
    = _A["workers"],
    batches_per_repeat: Annotated[int, typer.Option("--batches-per-repeat", help="Batches per timed repeat.")]
    = _A["batches_per_repeat"],
    compile: Annotated[bool, typer.Option("--compile", help="Also time the kornia pipeline under torch.compile.")]
    = False,
    repeats: RepeatsOpt = _A["repeats"],
    warmup: WarmupOpt = _A["warmup"],
    threads: ThreadsOpt = 0,
    device: DeviceOpt = "auto",
    json_path: JsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """BYOL's two views: kornia on whole batches vs torchvision v2 per sample in DataLoader workers."""
    from dlcvkit.bench.augment import bench_augment

    dev, info, _ = _start(threads, json_path, overwrite, device)
    contenders = ("kornia", "torchvision") + ("kornia_compiled",) * compile
    records = bench_augment(size, batch, device=dev, repeats=repeats, warmup=warmup, workers=workers,
                            batches_per_repeat=batches_per_repeat, contenders=contenders)
    _finish(records, info, json_path)


@app.command()
def train(
    task: Annotated[Task, typer.Option("--task", help="byol, cls or seg.")] = Task(_TR["task"]),
    model: Annotated[str, typer.Option("--model", help="timm backbone.")] = _TR["model"],
    segmenter: Annotated[str, typer.Option("--segmenter", help="seg: fcn32s, fcn16s, fcn8s or deeplabv3.")]
    = "fcn8s",
    img_size: Annotated[int, typer.Option("--img-size", help="Image side in pixels.")] = _TR["img_size"],
    batch: Annotated[int, typer.Option("--batch", help="Batch size.")] = _TR["batch"],
    precision: Annotated[Precision, typer.Option("--precision", help="fp32, bf16 or fp16 (GPU).")]
    = Precision.fp32,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="Channels-last model.")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    interval: Annotated[int, typer.Option("--interval", help="Optimizer steps per timed repeat (train.log_every).")]
    = _T["interval"],
    workers: Annotated[int, typer.Option("--workers", help="Loader workers of the dlcvkit_loader run.")]
    = _T["workers"],
    repeats: RepeatsOpt = _T["repeats"],
    warmup: WarmupOpt = _T["warmup"],
    threads: ThreadsOpt = 0,
    cache: CacheOpt = None,
    json_path: JsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """The engine's training step vs a bare PyTorch loop (overhead in %), and the data wait of a real run."""
    from dlcvkit.bench.train import bench_train

    _, info, cache = _start(threads, json_path, overwrite, cache=cache)
    records = bench_train(task.value, model, img_size=img_size, batch=batch, cache=cache, segmenter=segmenter,
                          precision=precision.value, channels_last=channels_last, compile=compile,
                          interval=interval, repeats=repeats, warmup=warmup, workers=workers)
    _finish(records, info, json_path)


@app.command()
def ema(
    model: Annotated[str, typer.Option("--model", help="timm model whose parameters and buffers are averaged.")]
    = _E["model"],
    tau: Annotated[float, typer.Option("--tau", help="EMA decay.")] = _E["tau"],
    repeats: RepeatsOpt = _E["repeats"],
    warmup: WarmupOpt = _E["warmup"],
    threads: ThreadsOpt = 0,
    device: DeviceOpt = "auto",
    json_path: JsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """One EMA update: the engine's EMA vs timm's ModelEmaV3 vs a naive per-tensor loop (results checked)."""
    from dlcvkit.bench.ema import bench_ema

    dev, info, _ = _start(threads, json_path, overwrite, device)
    _finish(bench_ema(model, tau=tau, device=dev, repeats=repeats, warmup=warmup), info, json_path)


@app.command()
def miou(
    batch: Annotated[int, typer.Option("--batch", help="Masks per update.")] = _M["batch"],
    size: Annotated[int, typer.Option("--size", help="Mask side in pixels.")] = _M["size"],
    masks: Annotated[int, typer.Option("--masks", help="Mask pairs of the `eval seg` timing (0 = skip it).")]
    = _S["masks"],
    eval_repeats: Annotated[int, typer.Option("--eval-repeats", help="Timed repeats of `eval seg`.")]
    = _S["repeats"],
    repeats: RepeatsOpt = _M["repeats"],
    warmup: WarmupOpt = _M["warmup"],
    threads: ThreadsOpt = 0,
    device: DeviceOpt = "auto",
    cache: CacheOpt = None,
    json_path: JsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Confusion accumulation (7 classes) vs torchmetrics and others (results checked); `eval seg` end to end."""
    from dlcvkit.bench.miou import bench_eval_seg, bench_miou

    dev, info, cache = _start(threads, json_path, overwrite, device, cache)
    records = bench_miou(batch=batch, size=size, classes=_M["classes"], device=dev, repeats=repeats, warmup=warmup)
    if masks > 0:
        records += bench_eval_seg(cache, masks=masks, size=size, repeats=eval_repeats, warmup=_S["warmup"])
    _finish(records, info, json_path)


@app.command()
def infer(
    task: Annotated[InferTask, typer.Option("--task", help="seg (the only inference benchmark so far).")]
    = InferTask.seg,
    segmenter: Annotated[str, typer.Option("--segmenter", help="fcn32s, fcn16s, fcn8s or deeplabv3.")]
    = _I["segmenter"],
    model: Annotated[str, typer.Option("--model", help="timm backbone.")] = _I["backbone"],
    images: Annotated[int, typer.Option("--images", help="Images per repeat.")] = _I["images"],
    img_size: Annotated[int, typer.Option("--img-size", help="Image side in pixels.")] = _I["img_size"],
    batch: Annotated[int, typer.Option("--batch", help="Images per forward pass.")] = _I["batch"],
    workers: Annotated[int, typer.Option("--workers", help="Decoding workers.")] = _I["workers"],
    precision: Annotated[Precision, typer.Option("--precision", help="fp32, bf16 or fp16 (GPU).")]
    = Precision.fp32,
    repeats: RepeatsOpt = _I["repeats"],
    warmup: WarmupOpt = _I["warmup"],
    threads: ThreadsOpt = 0,
    cache: CacheOpt = None,
    json_path: JsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """`dlcvkit predict seg` images/s end to end, and the model's forward pass alone."""
    from dlcvkit.bench.infer import bench_infer

    _, info, cache = _start(threads, json_path, overwrite, cache=cache)
    records = bench_infer(segmenter, model, images=images, img_size=img_size, batch=batch, workers=workers,
                          precision=precision.value, cache=cache, repeats=repeats, warmup=warmup)
    _finish(records, info, json_path)


@app.command()
def loader(
    quick: Annotated[bool, typer.Option("--quick", help="Small images, few of them, one repeat: checks in seconds "
                                                        "that everything runs (figures meaningless).")] = False,
    threads: ThreadsOpt = 0,
    cache: CacheOpt = None,
    json_path: JsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Image files to uint8 batches: torchvision ImageFolder + PIL vs dlcvkit's decode, scaled decode and warm
    decoded-image cache, with 0 and 2 loader workers (Office-Home-like photos, P2 tiles, Mini-ImageNet)."""
    from dlcvkit.bench.loader import bench_loader

    _, info, cache = _start(threads, json_path, overwrite, "cpu", cache)
    _finish(bench_loader(**(SMOKE if quick else FULL)["loader"], cache=cache), info, json_path)


@app.command("all")
def all_(
    smoke: Annotated[bool, typer.Option("--smoke", help="Toy sizes: checks that everything runs, figures "
                                                        "meaningless.")] = False,
    threads: ThreadsOpt = 0,
    device: DeviceOpt = "auto",
    cache: CacheOpt = None,
    json_path: JsonOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Every benchmark at the sizes of dlcvkit.bench.suite (under 10 minutes on a 2-core CPU)."""
    from dlcvkit.bench.suite import run_suite

    dev, info, cache = _start(threads, json_path, overwrite, device, cache)
    _finish(run_suite(SMOKE if smoke else FULL, dev, cache), info, json_path)


@app.command()
def gpu(
    size: Annotated[GpuSize, typer.Option("--size", help="full: the course's models and sizes on one CUDA GPU "
                                                         "(under 8 minutes); tiny: toy sizes, the dry run (also on "
                                                         "the CPU).")] = GpuSize.full,
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Run only this part (repeatable).")] = None,
    skip: Annotated[Optional[list[str]], typer.Option("--skip", help="Do not run this part (repeatable).")] = None,
    budget: Annotated[int, typer.Option("--budget", help="Seconds for all parts (0 = no limit); a part that no "
                                                         "longer fits is recorded as skipped.")] = 450,
    timeout: Annotated[int, typer.Option("--timeout", help="Seconds per part (0 = each part's own limit).")] = 0,
    in_process: Annotated[bool, typer.Option("--in-process", help="Run the parts in this process: quicker to "
                                                                  "start, but no time limit per part.")] = False,
    md_path: Annotated[Optional[Path], typer.Option("--md", help="Also write the report as Markdown here.")] = None,
    threads: ThreadsOpt = 0,
    device: DeviceOpt = "auto",
    cache: CacheOpt = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the check (JSON) here.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Every GPU path of the course's jobs once, part by part: throughput against its goals, peak memory, and
    the exactness checks (resume, GPU vs CPU evaluation). Parts: see dlcvkit/bench/gpu.py."""
    from dlcvkit.bench.gpu import gpu_check, markdown, print_summary, write_json
    from dlcvkit.outputs import check_output_file

    if md_path is not None:
        check_output_file(md_path, "--md", overwrite)
    dev, info, cache = _start(threads, json_path, overwrite, device, cache)
    console = _console()

    def progress(part: dict) -> None:
        reason = f": {part['reason']}" if part["reason"] else ""
        console.print(f"{part['name']}: {part['status']}{reason} ({part.get('seconds') or 0:.0f} s)", highlight=False)

    check = gpu_check(only or [], skip or [], size.value, dev, cache, info, budget=budget, timeout=timeout,
                      isolate=not in_process, threads=threads, progress=progress)
    print_summary(console, check)
    if json_path is not None:
        write_json(json_path, check)
    if md_path is not None:
        md_path.parent.mkdir(parents=True, exist_ok=True)
        md_path.write_text(markdown(check))
    failed = [part["name"] for part in check["parts"] if part["status"] == "failed"]
    if failed:  # the figures of the others are written; the exit status still says that something broke
        print(f"dlcvkit: bench gpu: {len(failed)} part(s) failed: {', '.join(failed)}", file=sys.stderr)
        raise typer.Exit(1)
