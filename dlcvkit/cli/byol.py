"""`dlcvkit byol` (self-supervised pre-training), `dlcvkit finetune` (Office-Home settings A–E) and
`dlcvkit eval probe` (linear-probe and kNN accuracy of frozen features)."""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from dlcvkit.cli.common import (
    CacheOpt,
    DataOpt,
    MaxStepsOpt,
    OutOpt,
    OverwriteOpt,
    RecipeOpt,
    ResumeOpt,
    SetOpt,
    ValOpt,
    run_training,
    with_cache,
)
from dlcvkit.errors import DlcvkitError


class SettingName(str, Enum):
    A = "A"
    B = "B"
    C = "C"
    D = "D"
    E = "E"


def byol(
    recipe: RecipeOpt = None,
    data: DataOpt = None,
    out: OutOpt = None,
    set_: SetOpt = None,
    max_steps: MaxStepsOpt = 0,
    resume: ResumeOpt = None,
    overwrite: OverwriteOpt = False,
    cache: CacheOpt = None,
) -> None:
    """Pre-train a backbone with BYOL on a folder of unlabeled images; writes RUN_DIR/backbone.safetensors."""
    from dlcvkit.tasks.byol import ByolRecipe, ByolTask

    run_training(ByolTask, ByolRecipe, recipe=recipe, data=data, val=None, out=out,
                 overrides=with_cache(set_, cache), max_steps=max_steps, resume=resume, overwrite=overwrite)


def finetune(
    recipe: RecipeOpt = None,
    data: Annotated[Optional[str], typer.Option(
        "--data", help="Office-Home folder (train/ + train.csv, val/ + val.csv), or the training data alone.")] = None,
    val: ValOpt = None,
    out: OutOpt = None,
    set_: SetOpt = None,
    max_steps: MaxStepsOpt = 0,
    resume: ResumeOpt = None,
    overwrite: OverwriteOpt = False,
    cache: CacheOpt = None,
    setting: Annotated[Optional[SettingName], typer.Option(
        "--setting", help="A scratch; B/D supervised backbone, full/frozen; C/E BYOL backbone, full/frozen.")] = None,
    backbone: Annotated[Optional[Path], typer.Option(
        "--backbone", help="Backbone file of settings B–E (.safetensors, or a torchvision .pt/.pth state dict).")] = None,
    all_settings: Annotated[bool, typer.Option(
        "--all-settings", help="Run A–E into OUT/A ... OUT/E and write the table (needs --supervised and --byol).")] = False,
    supervised: Annotated[Optional[Path], typer.Option(
        "--supervised", help="--all-settings: the supervised backbone file (settings B, D).")] = None,
    byol_backbone: Annotated[Optional[Path], typer.Option(
        "--byol", help="--all-settings: our BYOL backbone.safetensors (settings C, E).")] = None,
    tsne_every: Annotated[Optional[int], typer.Option(
        "--tsne-every", help="A t-SNE picture of the validation features every K epochs (RUN_DIR/tsne/).")] = None,
) -> None:
    """Fine-tune a classifier on Office-Home from scratch, a supervised or a BYOL backbone (settings A–E)."""
    from dlcvkit.tasks.finetune import (
        FinetuneRecipe,
        FinetuneTask,
        office_home_splits,
        setting_overrides,
    )

    if data is not None and val is None and (splits := office_home_splits(data)) is not None:
        data, val = (str(p) for p in splits)
    overrides = with_cache(set_, cache)
    if tsne_every is not None:
        overrides.append(f"viz.tsne_every={tsne_every}")
    if not all_settings:
        if supervised is not None or byol_backbone is not None:
            raise DlcvkitError("--supervised and --byol go with --all-settings; with --setting use --backbone PATH")
        if setting is not None:
            overrides += setting_overrides(setting.value, backbone)
        elif backbone is not None:
            raise DlcvkitError("--backbone goes with --setting B–E (or set model.pretrained in the recipe)")
        run_training(FinetuneTask, FinetuneRecipe, recipe=recipe, data=data, val=val, out=out, overrides=overrides,
                     max_steps=max_steps, resume=resume, overwrite=overwrite)
        return
    if setting is not None or backbone is not None or resume is not None:
        raise DlcvkitError("--all-settings runs every setting itself: drop --setting, --backbone and --resume")
    if supervised is None or byol_backbone is None:
        raise DlcvkitError("--all-settings needs --supervised PATH (settings B, D) and --byol PATH (settings C, E)")
    if out is None:
        raise DlcvkitError("--out DIR is required: the settings' runs go to DIR/A ... DIR/E, the table to DIR")
    if val is None:
        raise DlcvkitError("--all-settings reports validation accuracy: pass an Office-Home folder or --val")
    _all_settings(recipe, data, val, out, overrides, max_steps, supervised, byol_backbone, overwrite)


def _all_settings(recipe: Path | None, data: str | None, val: str, out: Path, overrides: list[str], max_steps: int,
                  supervised: Path, byol_backbone: Path, overwrite: bool) -> None:
    """Run A–E into OUT/A ... OUT/E; print the table and write it as OUT/settings.csv and OUT/settings.md."""
    from rich.console import Console
    from rich.table import Table

    from dlcvkit.engine.rundir import check_series_dir, mark_folder
    from dlcvkit.outputs import check_output_file
    from dlcvkit.tasks.finetune import (
        SETTINGS,
        SETTINGS_TABLE_FILES,
        FinetuneRecipe,
        FinetuneTask,
        setting_overrides,
        write_settings_table,
    )

    main = int(os.environ.get("RANK", "0")) == 0  # one table, written by the main process of a launch
    check_series_dir(out, SETTINGS, overwrite)  # before any setting trains: none is refused after others ran
    for name in SETTINGS_TABLE_FILES:
        check_output_file(out / name, "--out", overwrite)
    if main:
        mark_folder(out)
    files = {"": None, "supervised": supervised, "byol": byol_backbone}
    rows = []
    for name, row in SETTINGS.items():
        summary = run_training(FinetuneTask, FinetuneRecipe, recipe=recipe, data=data, val=val, out=out / name,
                               overrides=overrides + setting_overrides(name, files[row.source]), max_steps=max_steps,
                               resume=None, overwrite=overwrite)
        rows.append({"setting": name, "pretraining": row.pretraining, "finetuning": row.finetuning,
                     "acc": summary["best"] if summary["best"] is not None else summary["metrics"]["acc"]})
    if not main:
        return
    csv_path, md_path = write_settings_table(rows, out)
    table = Table(title="Office-Home fine-tuning (best validation accuracy)")
    for column in ("setting", "pre-training", "fine-tuning", "validation accuracy"):
        table.add_column(column, justify="right" if column == "validation accuracy" else "left")
    for r in rows:
        table.add_row(r["setting"], r["pretraining"], r["finetuning"], f"{r['acc']:.4f}")
    console = Console()
    console.print(table)
    console.print(f"table written to {csv_path} and {md_path}", highlight=False)


def probe(
    data: Annotated[Path, typer.Option(
        "--data", help="Office-Home folder (train/ + train.csv, val/ + val.csv), or the training data with --val.")],
    backbone: Annotated[Optional[Path], typer.Option(
        "--backbone", help="Backbone file (BYOL backbone.safetensors, or a supervised one); none = random init.")] = None,
    val: ValOpt = None,
    arch: Annotated[Optional[str], typer.Option(
        "--arch", help="timm architecture (default: the one a BYOL backbone file records).")] = None,
    img_size: Annotated[int, typer.Option(
        "--img-size", help="Image side (default: the BYOL file's pre-training size, else 128).")] = 0,
    k: Annotated[int, typer.Option("--k", help="Neighbours of the kNN vote.")] = 20,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 128,
    workers: Annotated[int, typer.Option("--workers", help="DataLoader workers.")] = 2,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random initialisation (without --backbone).")] = 0,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Linear-probe and kNN (k = 20, cosine) validation accuracy of a frozen backbone's features."""
    import torch
    from accelerate.utils import set_seed

    from dlcvkit.config import DataConfig
    from dlcvkit.data.datasets import open_labeled
    from dlcvkit.outputs import check_output_file
    from dlcvkit.tasks.finetune import office_home_splits
    from dlcvkit.tasks.probe import backbone_metadata, open_backbone, probe_features

    if json_out is not None:
        check_output_file(json_out, "--json", overwrite, {"--data": data, "--val": val, "--backbone": backbone})
    if val is None:
        splits = office_home_splits(data)
        if splits is None:
            raise DlcvkitError(f"--data {data} is not an Office-Home folder (train/ + train.csv, val/ + val.csv); "
                               "pass the training data with --val VAL")
        data, val = splits
    size = img_size or int(backbone_metadata(backbone).get("img_size", 128) if backbone else 128)
    set_seed(seed)
    net, name = open_backbone(backbone, arch)
    train_set = open_labeled(data, size=size)
    val_set = open_labeled(val, size=size, num_classes=train_set.num_classes)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    result = probe_features(net, train_set, val_set, DataConfig(batch_size=batch_size, num_workers=workers), device, k)
    result |= {"backbone": str(backbone) if backbone else f"random init (seed {seed})", "arch": name, "img_size": size,
               "train": len(train_set), "val": len(val_set), "k": k}
    typer.echo(f"backbone: {result['backbone']} ({name}, {size} px)")
    typer.echo(f"linear probe accuracy: {result['linear_probe_acc']:.4f}")
    typer.echo(f"kNN (k={k}, cosine) accuracy: {result['knn_acc']:.4f}")
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=1) + "\n")
