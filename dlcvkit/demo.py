"""`dlcvkit demo`: every capability on embedded data (synthetic sets and scikit-learn's digits), in one folder
with a report. It is a script of the real CLI commands, run in this process (the CLI passes itself in as
`run_cli`), so it shows exactly what a user types; under `accelerate launch` every process runs the same sequence
and the steps that only write files run on the main process.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import PartialState

from dlcvkit.engine.distributed import pick_device
from dlcvkit.engine.runlog import counted, read_metrics
from dlcvkit.errors import DlcvkitError
from dlcvkit.recipes import shipped
from dlcvkit.report import Block, comparison, write_report
from dlcvkit.runnames import BACKBONE_FILE, MODEL_FILE, REPORT_HTML, REPORT_MD


@dataclass(frozen=True)
class Sizes:
    """How much data and training each part of the demo gets."""

    ssl: int  # unlabelled images for BYOL
    office: int  # Office-Home-like labelled images (80/20 train/val)
    supervised: int  # labelled images of other classes, for the supervised backbone of settings B/D
    seg_train: int
    seg_val: int  # odd on purpose: distributed evaluation must still count each image once
    byol_epochs: int
    cls_epochs: int
    finetune_epochs: int
    seg_epochs: int


# --quick: 8 BYOL epochs (248 steps; 4 left the target network half its random init with τ_base 0.99, and kNN
# within 6 points of random init), fine-tuning 3 epochs (at 6, A and C both saturate at 0.855 on this easy set,
# which hides what pre-training brings at a short budget: at 3, A 0.41 and C 0.535 were measured)
QUICK = Sizes(ssl=2000, office=1000, supervised=2000, seg_train=24, seg_val=9, byol_epochs=8, cls_epochs=5,
              finetune_epochs=3, seg_epochs=12)
FULL = Sizes(ssl=5000, office=2500, supervised=2000, seg_train=48, seg_val=17, byol_epochs=15, cls_epochs=8,
             finetune_epochs=6, seg_epochs=30)


class Demo:
    """Runs the steps, times them, and collects what the report shows."""

    def __init__(self, out: Path, sizes: Sizes, max_steps: int, run_cli: Callable[[list[str]], None]) -> None:
        self.out, self.sizes, self.max_steps, self.run_cli = out, sizes, max_steps, run_cli
        self.data, self.runs = out / "data", out / "runs"
        self.state = PartialState(cpu=pick_device().type == "cpu")
        self.timings: list[tuple[str, float]] = []

    def cli(self, title: str, *args, main_only: bool = False, train: bool = False) -> None:
        """Run `dlcvkit ARGS` here (on the main process only with `main_only`), then wait for every process."""
        args = [str(a) for a in args] + (["--max-steps", str(self.max_steps)] if train and self.max_steps else [])
        start = time.perf_counter()
        if self.state.is_main_process:
            print(f"\n[demo] {title}: dlcvkit {' '.join(args)}", flush=True)
        if self.state.is_main_process or not main_only:
            self.run_cli(args)
        self.state.wait_for_everyone()
        self.timings.append((title, time.perf_counter() - start))

    def read_json(self, path: Path) -> dict:
        return json.loads(path.read_text())


def run_demo(out: Path, run_cli: Callable[[list[str]], None], quick: bool = False, max_steps: int = 0) -> Path:
    """Run everything into OUT with `run_cli(ARGS)` (`dlcvkit ARGS`, raising on failure) and write OUT/report.md
    and OUT/report.html; returns the Markdown path."""
    out = Path(out)
    s = QUICK if quick else FULL
    d = Demo(out, s, max_steps, run_cli)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DlcvkitError(f"--out {out} is not empty; the demo writes a fresh folder (choose another or remove it)")
    d.state.wait_for_everyone()  # every process checked the folder before the main one writes into it
    data, runs = d.data, d.runs

    # fixed grey levels: with a random palette per image BYOL's two views match by colour, not by object (see
    # dlcvkit.data.synth); every object set alike, so that the backbones of settings A-E see one kind of image
    d.cli("data: unlabelled images (Mini-ImageNet layout)", "data", "synth", "ssl", "--out", data / "ssl",
          "--n", s.ssl, "--img-size", 32, "--palette", "fixed", main_only=True)
    d.cli("data: Office-Home layout", "data", "synth", "officehome", "--out", data / "office", "--n", s.office,
          "--img-size", 32, "--palette", "fixed", main_only=True)
    d.cli("data: labelled images of 20 other classes (P1 layout)", "data", "synth", "cls", "--out",
          data / "supervised", "--n", s.supervised, "--img-size", 32, "--classes", 20, "--seed", 7,
          "--palette", "fixed", main_only=True)
    d.cli("data: satellite tiles, train", "data", "synth", "seg", "--out", data / "seg_train", "--n", s.seg_train,
          "--img-size", 64, main_only=True)
    d.cli("data: satellite tiles, validation", "data", "synth", "seg", "--out", data / "seg_val", "--n", s.seg_val,
          "--img-size", 64, "--seed", 1, main_only=True)
    d.cli("data: scikit-learn's handwritten digits (real)", "data", "export-digits", "--out", data / "digits",
          main_only=True)

    # 1. BYOL pre-training watched by the kNN monitor, then linear probe / kNN of its backbone against a random one
    d.cli("BYOL pre-training", "byol", "-r", shipped("demo_byol"), "--data", data / "ssl", "--out", runs / "byol",
          "--monitor", data / "office", "--set", f"train.epochs={s.byol_epochs}", train=True)
    d.cli("probe: BYOL backbone", "eval", "probe", "--data", data / "office",
          "--backbone", runs / "byol" / BACKBONE_FILE, "--workers", 0, "--json", out / "probe_byol.json",
          main_only=True)
    d.cli("probe: random backbone", "eval", "probe", "--data", data / "office", "--model", "resnet18",
          "--img-size", 32, "--workers", 0, "--json", out / "probe_random.json", main_only=True)

    # 2. A supervised backbone (standing in for the course's provided one), then fine-tuning settings A–E
    d.cli("supervised backbone for settings B/D", "classify", "-r", shipped("demo_cls"), "--data",
          data / "supervised", "--out", runs / "supervised", "--set", f"train.epochs={s.cls_epochs}", train=True)
    d.cli("fine-tuning settings A–E", "finetune", "-r", shipped("demo_finetune"), "--all-settings",
          "--data", data / "office", "--out", runs / "finetune",
          "--supervised", runs / "supervised" / MODEL_FILE, "--byol", runs / "byol" / BACKBONE_FILE,
          "--tsne-every", s.finetune_epochs, "--set", f"train.epochs={s.finetune_epochs}", train=True)

    # 3. Segmentation: the FCN32s baseline against FCN8s, tracked masks, the course's evaluation of predictions
    for name in ("fcn32s", "fcn8s"):
        d.cli(f"segmentation {name}", "segment", "-r", shipped("demo_seg"), "--data", data / "seg_train",
              "--val", data / "seg_val", "--out", runs / name, "--track", "0000,0004", "--set", f'model.name="{name}"',
              "--set", f"train.epochs={s.seg_epochs}", train=True)
        d.cli(f"predict {name} masks", "predict", "seg", "--run", runs / name, "--data", data / "seg_val",
              "--out", out / "predictions" / name)
        d.cli(f"course mIoU of {name}", "eval", "seg", "--pred", out / "predictions" / name,
              "--labels", data / "seg_val", "--absent", "skip", "--json", out / f"miou_{name}.json", main_only=True)

    # 4. Classification of real digits, its evaluation, confusion matrix and t-SNE
    d.cli("classification (digits)", "classify", "-r", shipped("demo_cls"), "--data", data / "digits" / "train",
          "--val", data / "digits" / "val", "--out", runs / "digits", "--set", f"train.epochs={s.cls_epochs}",
          train=True)
    d.cli("evaluate digits", "eval", "cls", "--run", runs / "digits", "--data", data / "digits" / "val",
          "--json", out / "digits_eval.json", "--confusion", out / "digits_confusion.png")
    d.cli("t-SNE of digits", "tsne", "--run", runs / "digits", "--data", data / "digits" / "val",
          "--out", out / "digits_tsne.png", main_only=True)

    if d.state.is_main_process:
        write_report(demo_blocks(d), out)
        print(f"\n[demo] done: {out / REPORT_MD} (and {REPORT_HTML})", flush=True)
    d.state.wait_for_everyone()
    return out / REPORT_MD


def demo_blocks(d: Demo) -> list[Block]:
    """The demo's report."""
    out, runs, s = d.out, d.runs, d.sizes
    blocks = [Block("heading", "dlcvkit demo", level=1), Block("text", (
        f"Everything below ran on embedded data with `dlcvkit demo{' --quick' if s is QUICK else ''}"
        f"{f' --max-steps {d.max_steps}' if d.max_steps else ''}` on {counted(d.state.num_processes, 'process', 'processes')}, "
        f"device {d.state.device}, {platform.processor() or platform.machine()}, torch {torch.__version__}. "
        "The synthetic sets are procedural stand-ins for the course's data (no download); the digits are real. "
        "Each run folder holds its own report.md with curves and its recipe."))]

    byol, rand = d.read_json(out / "probe_byol.json"), d.read_json(out / "probe_random.json")
    blocks += [Block("heading", "1. BYOL pre-training: frozen features"), Block("table",
               header=["backbone (resnet18, 32 px)", "linear probe", "kNN (k = 20)"],
               rows=[["random init", f"{rand['linear_probe_acc']:.4f}", f"{rand['knn_acc']:.4f}"],
                     ["BYOL (this demo)", f"{byol['linear_probe_acc']:.4f}", f"{byol['knn_acc']:.4f}"]])]
    monitor = [r for r in read_metrics(runs / "byol") if "knn_acc" in r]
    if monitor:
        blocks.append(Block("text", (
            "The kNN monitor during pre-training (`--monitor`: k = 20 on the online encoder's features of the "
            "Office-Home-like training images, every fifth classified by the others), by epoch: "
            + ", ".join(f"{r['epoch']}: {r['knn_acc']:.4f}" for r in monitor)
            + f" (chance about {1 / _classes(out / 'data' / 'office'):.2f}). Its curve is in the BYOL run's report.")))
    se = 100 * (0.25 / byol["val"]) ** 0.5  # the largest binomial standard error, at accuracy 0.5
    blocks.append(Block("text", (
        f"BYOL trained {s.byol_epochs} epochs of {s.ssl} images. Against the random backbone its features "
        f"change the linear probe by {100 * (byol['linear_probe_acc'] - rand['linear_probe_acc']):+.1f} points "
        f"and kNN by {100 * (byol['knn_acc'] - rand['knn_acc']):+.1f} ({byol['val']} validation images: one "
        f"standard error is at most {se:.1f} points). The object images have fixed grey levels (`data synth "
        "--palette fixed`): with a random palette per image BYOL's two views match by colour, and the quick "
        "demo's BYOL measured no gain over random init (probe 0.115 against 0.105). DINO and SimCLR run on the "
        "same contract and data (`dlcvkit dino -r demo_dino`, `dlcvkit simclr -r demo_simclr`); the demo runs "
        "BYOL only, to stay within its time, and benchmarks/RESULTS.md compares the three on Fashion-MNIST.")))

    table = (runs / "finetune" / "settings.md").read_text().strip().splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
    blocks += [Block("heading", "2. Office-Home fine-tuning, settings A–E"), Block("table", header=header, rows=rows),
               Block("text", f"Each setting fine-tunes {s.finetune_epochs} epochs: a short budget, where a "
                             "pre-trained start shows (the synthetic task is easy: given long enough, random init "
                             "catches up).")]
    blocks += [Block("image", f"t-SNE of validation features, setting {x}", path=p)
               for x in ("C", "E") for p in sorted((runs / "finetune" / x / "tsne").glob("*.png"))[-1:]]

    seg_rows = []
    for name in ("fcn32s", "fcn8s"):
        m = d.read_json(out / f"miou_{name}.json")
        seg_rows.append([name, *(_num(v) for v in m["iou"]), _num(m["mean_iou"])])
    classes = d.read_json(out / "miou_fcn8s.json")["classes"]
    blocks += [Block("heading", "3. Segmentation: FCN32s vs FCN8s (course mIoU of the masks predicted with "
                                "best.safetensors)"),
               Block("table", header=["model", *classes, "mean IoU"], rows=seg_rows)]
    blocks += [Block("image", f"{name}: image, ground truth, early / middle / final predictions",
                     path=runs / name / "track.png")
               for name in ("fcn32s", "fcn8s") if (runs / name / "track.png").is_file()]

    digits = d.read_json(out / "digits_eval.json")
    blocks += [Block("heading", "4. Classification of handwritten digits"),
               Block("text", f"validation accuracy {digits['acc']:.4f} ({runs / 'digits'})")]
    blocks += [Block("image", caption, path=out / f) for f, caption in
               (("digits_tsne.png", "t-SNE of penultimate features"), ("digits_confusion.png", "confusion matrix"))
               if (out / f).is_file()]

    names = ("byol", "supervised", "fcn32s", "fcn8s", "digits")
    header, rows = comparison([runs / n for n in names])
    blocks += [Block("heading", "Runs side by side"), Block("table", header=header, rows=rows),
               Block("runs", "Each run's own report (curves, pictures, recipe):",
                     rows=[[n, runs / n] for n in names]),
               Block("heading", "Time per step"),
               Block("table", header=["step", "seconds"], rows=[[t, f"{sec:.1f}"] for t, sec in d.timings])]
    return blocks


def _classes(office: Path) -> int:
    """The number of classes of an Office-Home-like folder (its train.csv's labels)."""
    rows = (office / "train.csv").read_text().splitlines()[1:]
    return len({row.rsplit(",", 1)[1] for row in rows if row.strip()})


def _num(value) -> str:
    return "nan" if value is None else f"{value:.4f}"
