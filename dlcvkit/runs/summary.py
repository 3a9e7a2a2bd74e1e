"""`dlcvkit summary`: the architecture of a run's model, a timm classifier or a segmenter as a layer table."""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from dlcvkit.errors import DlcvkitError


def layer_table(model: str, *, task: str = "cls", num_classes: int = 0, input_size: tuple[int, int, int] | None = None,
                depth: int = 3) -> tuple[nn.Module, str]:
    """(the module, torchinfo's table of output shapes and parameters) of `model`: a run folder, a timm name, or
    with `task` "seg" NAME:BACKBONE; `input_size` C H W defaults to the run's or the model's own."""
    import torchinfo

    net, size = _summary_model(model, task, num_classes)
    size = tuple(input_size) if input_size else size
    if min(size) < 1:
        raise DlcvkitError(f"--input-size {' '.join(map(str, size))}: C, H and W must be positive")
    stats = torchinfo.summary(net, input_size=(1, *size), depth=depth, device="cpu", verbose=0, mode="eval",
                              col_names=("output_size", "num_params", "trainable"), row_settings=("var_names",))
    # torchinfo 1.8 formats its str-Enum units with str(), "(Units.MEGABYTES)" on Python >= 3.11: write "(M)"
    return net, re.sub(r"\(Units\.(\w+)\)", lambda unit: f"({torchinfo.Units[unit[1]].value})", str(stats))


def _summary_model(model: str, task: str, num_classes: int):
    """(module, default input size c h w) for `summary`."""
    from dlcvkit.models.backbones import create_backbone

    if Path(model).is_dir():
        from dlcvkit.runs.load import run_recipe
        from dlcvkit.tasks.registry import task_classes

        recipe = run_recipe(Path(model))
        return task_classes(recipe.task)[1](recipe).build_model(), (3, recipe.data.img_size, recipe.data.img_size)
    if task == "seg":
        if ":" not in model:
            raise DlcvkitError(f"summary --task seg {model!r}: write the segmenter as NAME:BACKBONE, e.g. fcn8s:vgg16")
        try:
            from dlcvkit.models.segmenters import build_segmenter
        except ImportError as e:
            raise DlcvkitError(f"summary --task seg: the segmentation models are not available ({e})") from None
        name, backbone = model.split(":", 1)
        return build_segmenter(name, backbone, num_classes=num_classes or 7), (3, 512, 512)
    net = create_backbone(model, **({"num_classes": num_classes} if num_classes else {}))
    return net, tuple(net.pretrained_cfg.get("input_size", (3, 224, 224)))
