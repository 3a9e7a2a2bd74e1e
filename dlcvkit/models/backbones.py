"""timm backbones by name, with pretrained weights from a local file (no download needed) or the hub."""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import timm
from safetensors import safe_open
from torch import nn

from dlcvkit.engine.weights import load_weights, read_state_dict
from dlcvkit.errors import DlcvkitError, closest, first_line

HUB = "hub"  # `pretrained = "hub"`: let timm download the weights (needs a network)


def create_backbone(name: str, pretrained: str = "", *, factory: Callable[..., nn.Module] = timm.create_model,
                    **kwargs) -> nn.Module:
    """`timm.create_model(name, **kwargs)` with `pretrained` = "" (random init), a local weights file
    (.safetensors / .pth / .pt; torchvision-format state dicts are converted by timm's checkpoint filters),
    or "hub". Every failure becomes a one-line DlcvkitError saying how to fix it.

    `factory` replaces timm.create_model by a builder that passes `name`, `pretrained` (a bool) and the timm
    keyword arguments on to it, as segmentation_models_pytorch does for its `tu-` encoders."""
    if name not in timm.list_models() and name not in timm.list_models(pretrained=True):
        close = closest(name.split(".")[0], timm.list_models())
        raise DlcvkitError(f"unknown timm model '{name}'" + (f"; similar: {', '.join(close)}" if close else ""))
    if not pretrained:
        return factory(name, pretrained=False, **kwargs)
    if pretrained == HUB:
        if not _hub_reachable():
            raise DlcvkitError(
                f"pretrained weights for '{name}' were asked from the hub, which cannot be reached (offline?); "
                f"download them elsewhere and pass the local file: --set model.pretrained=/path/to/{name}.safetensors"
                " (or a torchvision .pth state dict)"
            )
        try:
            return factory(name, pretrained=True, **kwargs)
        except Exception as e:  # noqa: BLE001 - hub, network and cache errors come in many types
            raise DlcvkitError(
                f"could not get pretrained weights for '{name}' from the hub ({first_line(e)}); offline, download "
                f"them elsewhere and pass the local file: --set model.pretrained=/path/to/{name}.safetensors (or .pth)"
            ) from None
    path = Path(pretrained)
    if not path.is_file():
        raise DlcvkitError(f"pretrained weights file {path} does not exist (model.pretrained)")
    read_state_dict(path)  # refuses what is unsafe to unpickle or inf/nan, naming the file; timm then loads it
    try:
        with _weights_left_random() as missing:
            model = factory(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    except Exception as e:  # noqa: BLE001 - torch.load / load_state_dict raise RuntimeError, pickle errors, ...
        raise DlcvkitError(f"pretrained weights {path} do not load into '{name}': {first_line(e)}") from None
    # timm loads the whole network, then keeps what features_only (or smp, under its own prefix) asks for
    own = model.state_dict().keys()
    missing = [k for k in missing if any(key == k or key.endswith(f".{k}") for key in own)]
    if missing:
        raise DlcvkitError(f"pretrained weights {path} do not fit '{name}': {len(missing)} of its weights are not in "
                           f"the file (first: {missing[0]}); pass weights of {name} (model.pretrained)")
    return model


@contextmanager
def _weights_left_random():
    """The weights timm leaves at random init while it loads a pretrained file: it loads non-strictly whenever the
    head differs from the file's (features_only and num_classes=0 included) and only logs the missing keys, so a
    file of another network would load nothing, silently. BatchNorm's counters are not weights."""
    missing: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found = re.match(r"Missing keys \((.*)\) discovered", record.getMessage())
            keys = found[1].split(", ") if found else []
            missing.extend(k for k in keys if not k.endswith("num_batches_tracked"))

    logger, handler = logging.getLogger("timm.models._builder"), Collect()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))  # timm logs the missing keys at INFO
    try:
        yield missing
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub, so an offline machine gets its error at once instead of after minutes of
    huggingface_hub's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


# key prefixes under which other dlcvkit runs keep a backbone: a classifier's model.safetensors, a BYOL run's
FOREIGN_PREFIXES = ("backbone.", "online.encoder.")


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a backbone file into a timm backbone built with `num_classes=0`, strictly.

    Accepts a torchvision- or timm-format state dict (.pt/.pth through `weights_only=True`, or safetensors;
    its ImageNet classifier is dropped), BYOL's `backbone.safetensors`, and the weights of a dlcvkit classifier
    or BYOL run (keys under FOREIGN_PREFIXES). timm's own file loading is not used because it turns strict
    checking off whenever the class count differs, so a file of another network would load nothing, silently.
    """
    state = read_state_dict(path)
    own = backbone.state_dict()
    if not own.keys() & state.keys():
        for prefix in FOREIGN_PREFIXES:
            if any(key.startswith(prefix) for key in state):
                state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
                break
    classifier = getattr(backbone, "pretrained_cfg", {}).get("classifier") or ()
    heads = tuple(f"{name}." for name in ((classifier,) if isinstance(classifier, str) else classifier))
    state = {k: v for k, v in state.items() if k in own or not k.startswith(heads)} if heads else state
    load_weights(backbone, state, source=f"backbone file {path}")


def backbone_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors backbone file (BYOL writes the timm name and the image size there)."""
    if Path(path).suffix != ".safetensors":
        return {}
    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}
