"""`dlcvkit classify`: train an image classifier."""

from __future__ import annotations

from dlcvkit.cli.common import DataOpt, MaxStepsOpt, OutOpt, RecipeOpt, ResumeOpt, SetOpt, ValOpt, run_training


def classify(
    recipe: RecipeOpt = None,
    data: DataOpt = None,
    val: ValOpt = None,
    out: OutOpt = None,
    set_: SetOpt = None,
    max_steps: MaxStepsOpt = 0,
    resume: ResumeOpt = None,
) -> None:
    """Train a classifier: any timm backbone, recipe-defined head (P1 folder, ImageFolder or CSV data)."""
    from dlcvkit.tasks.classify import ClassifyRecipe, ClassifyTask

    run_training(ClassifyTask, ClassifyRecipe, recipe=recipe, data=data, val=val, out=out, overrides=set_,
                 max_steps=max_steps, resume=resume)
