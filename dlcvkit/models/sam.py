"""Segment Anything (Kirillov et al. 2023) from a local checkpoint: the `segment-anything` package's model
builders, loaded safely (`torch.load(weights_only=True)` or safetensors) with one-line errors for a missing
package, a missing checkpoint or a checkpoint of another model type."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from dlcvkit.engine.weights import load_weights, read_state_dict
from dlcvkit.errors import DlcvkitError

# The official checkpoints (the "Model Checkpoints" section of the README) and their image encoders:
# type -> (file name, ViT width, ViT blocks), as build_sam.py builds them.
SAM_MODELS = {
    "vit_b": ("sam_vit_b_01ec64.pth", 768, 12),
    "vit_l": ("sam_vit_l_0b3195.pth", 1024, 24),
    "vit_h": ("sam_vit_h_4b8939.pth", 1280, 32),
}
CHECKPOINTS_URL = "https://github.com/facebookresearch/segment-anything#model-checkpoints"
_WIDTH_KEY = "image_encoder.patch_embed.proj.weight"
_BLOCK_KEY = re.compile(r"^image_encoder\.blocks\.(\d+)\.")


def where_to_get_checkpoints() -> str:
    """What to do without a checkpoint, for error messages."""
    files = ", ".join(f"{file} ({name})" for name, (file, _, _) in SAM_MODELS.items())
    return (f"download one of the official checkpoints, {files}, from the links at {CHECKPOINTS_URL} "
            "(dlcvkit downloads no weights) and pass the file with --checkpoint PATH")


def encoder_shape(state: dict[str, torch.Tensor], source: str) -> tuple[int, int]:
    """(width, number of blocks) of the ViT image encoder a SAM state_dict holds."""
    if _WIDTH_KEY not in state:
        raise DlcvkitError(
            f"{source} is not a Segment Anything checkpoint (it has no '{_WIDTH_KEY}'); {where_to_get_checkpoints()}"
        )
    blocks = {int(m[1]) for key in state if (m := _BLOCK_KEY.match(key))}
    return state[_WIDTH_KEY].shape[0], len(blocks)


def _official(width: int, blocks: int) -> str | None:
    return next((name for name, (_, w, b) in SAM_MODELS.items() if (w, b) == (width, blocks)), None)


def _not_official(source: str, width: int, blocks: int) -> DlcvkitError:
    return DlcvkitError(
        f"{source} holds a ViT image encoder of width {width} with {blocks} blocks, none of the official SAM "
        f"models ({'; '.join(f'{n}: width {w}, {b} blocks' for n, (_, w, b) in SAM_MODELS.items())}); "
        f"{where_to_get_checkpoints()}"
    )


def detect_model_type(state: dict[str, torch.Tensor], source: str) -> str:
    """The official model type (vit_b, vit_l, vit_h) whose image encoder the checkpoint holds."""
    found = encoder_shape(state, source)
    if (name := _official(*found)) is None:
        raise _not_official(source, *found)
    return name


def load_sam(checkpoint: Path, model_type: str | None = None, device: torch.device | str = "cpu") -> nn.Module:
    """The `Sam` model of a local checkpoint in eval mode on `device`; `model_type` None: read from the file."""
    if not Path(checkpoint).is_file():
        raise DlcvkitError(f"--checkpoint {checkpoint} does not exist; {where_to_get_checkpoints()}")
    try:
        from segment_anything import sam_model_registry
    except ImportError:
        raise DlcvkitError(
            "Segment Anything is an optional dependency: pip install -e '.[sam]' (or pip install segment-anything)"
        ) from None
    # the package's builders torch.load(checkpoint) without weights_only (arbitrary code from a pickle): the
    # weights are read safely here and the model is built empty
    state = read_state_dict(checkpoint)
    source = f"--checkpoint {checkpoint}"
    if model_type is None:
        model_type = detect_model_type(state, source)
    if model_type not in SAM_MODELS:
        raise DlcvkitError(f"--model-type {model_type}: expected one of {', '.join(SAM_MODELS)}")
    # on the meta device: no random initialisation of up to 641M parameters (10 s on a CPU) that the file replaces
    with torch.device("meta"):
        sam = sam_model_registry[model_type](checkpoint=None)
    found = encoder_shape(state, source)
    if found != encoder_shape(sam.state_dict(), model_type):
        if (name := _official(*found)) is None:
            raise _not_official(source, *found)
        raise DlcvkitError(
            f"{source} holds a {name} model, not {model_type}: pass --model-type {name} (or leave it out: the "
            "type is read from the checkpoint)"
        )
    load_weights(sam, state, source=source, assign=True)
    return sam.to(device).eval()
