"""A series of training runs: Office-Home fine-tuning in the settings A–E (`dlcvkit finetune --all-settings`),
each a run of its own in OUT/A ... OUT/E, and their table beside them."""

from __future__ import annotations

import csv
from pathlib import Path

from dlcvkit.engine.distributed import is_launch_main_process
from dlcvkit.engine.rundir import check_series_dir, mark_folder
from dlcvkit.outputs import check_output_file
from dlcvkit.runs.training import run_training
from dlcvkit.tasks.finetune import SETTINGS, setting_overrides

SETTINGS_TABLE_FILES = ("settings.csv", "settings.md")  # beside the settings' run folders OUT/A ... OUT/E


def write_settings_table(rows: list[dict], out_dir: Path) -> tuple[Path, Path]:
    """The A–E table (setting, pre-training, fine-tuning, validation accuracy) as settings.csv and settings.md."""
    header = ["setting", "pre-training", "fine-tuning", "validation accuracy"]
    csv_path, md_path = (out_dir / name for name in SETTINGS_TABLE_FILES)
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([r["setting"], r["pretraining"], r["finetuning"], f"{r['acc']:.4f}"] for r in rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [f"| {r['setting']} | {r['pretraining']} | {r['finetuning']} | {r['acc']:.4f} |" for r in rows]
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


def run_all_settings(recipe: Path | None, data: str | None, val: str, out: Path, overrides: list[str],
                     max_steps: int, supervised: Path | None, byol_backbone: Path | None,
                     overwrite: bool = False, names: str = "ABCDE") -> tuple[list[dict], Path, Path] | None:
    """Run the settings `names` (A–E) into OUT/A ... OUT/E and write the table as OUT/settings.csv and
    OUT/settings.md; (its rows, the two paths) on the main process of a launch, which alone writes it, None on
    the others."""
    main = is_launch_main_process()  # one table, written by the main process of a launch
    chosen = {name: SETTINGS[name] for name in names}
    check_series_dir(out, chosen, overwrite)  # before any setting trains: none is refused after others ran
    for table_file in SETTINGS_TABLE_FILES:
        check_output_file(out / table_file, "--out", overwrite)
    if main:
        mark_folder(out)
    files = {"": None, "supervised": supervised, "byol": byol_backbone}
    rows = []
    for name, row in chosen.items():
        summary = run_training("finetune", recipe=recipe, data=data, val=val, out=out / name,
                               overrides=overrides + setting_overrides(name, files[row.source]), max_steps=max_steps,
                               resume=None, overwrite=overwrite)
        rows.append({"setting": name, "pretraining": row.pretraining, "finetuning": row.finetuning,
                     "acc": summary["best"] if summary["best"] is not None else summary["metrics"]["acc"]})
    if not main:
        return None
    return rows, *write_settings_table(rows, out)
