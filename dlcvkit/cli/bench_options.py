"""The options of the `dlcvkit bench` commands (dlcvkit.cli.bench and dlcvkit.cli.bench_runs): timing, threads,
device, scratch folder and JSON output, and the model choices the benchmarks share."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dlcvkit.cli.options import DeviceOpt, JsonOpt, OverwriteOpt, choices, option


def bench_options(defaults: dict | None = None, *, device: bool = True, cache: bool = False) -> tuple:
    """The options every `dlcvkit bench` command takes: --repeats and --warmup (their `defaults` from
    dlcvkit.bench.suite.FULL), --threads, --device, --cache (where it makes data), --json, --overwrite."""
    timed = (option("repeats", Annotated[int, typer.Option("--repeats", help="Timed repeats (the median and spread "
                                                                             "are reported).")], defaults["repeats"]),
             option("warmup", Annotated[int, typer.Option("--warmup", help="Untimed repeats first.")],
                    defaults["warmup"])) if defaults else ()
    where = (option("device", DeviceOpt, "auto"),) if device else ()
    data = (option("cache", Annotated[Optional[Path], typer.Option(
        "--cache", help="Folder for the synthetic data (kept between runs) and scratch runs (default: "
                        "TMPDIR/dlcvkit-bench).")], None),) if cache else ()
    threads = option("threads", Annotated[int, typer.Option("--threads", help="torch intra-op threads (0 = one per "
                                                                              "core).")], 0)
    return (*timed, threads, *where, *data, option("json_path", JsonOpt, None),
            option("overwrite", OverwriteOpt, False))


Precision = choices("Precision", "fp32", "bf16", "fp16")
ModelOpt = Annotated[str, typer.Option("--model", help="timm backbone.")]
SegmenterOpt = Annotated[str, typer.Option("--segmenter", help="seg: fcn32s, fcn16s, fcn8s or deeplabv3.")]
ImgSizeOpt = Annotated[int, typer.Option("--img-size", help="Image side in pixels.")]
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="fp32, bf16 or fp16 (GPU).")]
