"""Options every training command shares, and the one function that turns them into a run of the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

RecipeOpt = Annotated[
    Optional[Path], typer.Option("--recipe", "-r", help="Recipe TOML (see recipes/), or a run folder to copy its recipe.")
]
DataOpt = Annotated[Optional[str], typer.Option("--data", help="Training data (sets data.train).")]
ValOpt = Annotated[Optional[str], typer.Option("--val", help="Validation data (sets data.val).")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder to create (RUN_DIR).")]
SetOpt = Annotated[
    Optional[list[str]], typer.Option("--set", help="Override a recipe key, e.g. --set optim.lr=0.1 (repeatable).")
]
MaxStepsOpt = Annotated[
    int, typer.Option("--max-steps", help="Stop after N optimizer steps; the LR and EMA schedules are unchanged.")
]
ResumeOpt = Annotated[
    Optional[Path], typer.Option("--resume", help="Continue the run in RUN_DIR from its latest checkpoint.")
]

SkipBadOpt = Annotated[
    bool, typer.Option("--skip-bad", help="Leave out images that cannot be decoded (all are decoded once first; "
                                          "how many were left out is printed).")
]
