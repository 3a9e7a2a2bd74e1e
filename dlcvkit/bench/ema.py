"""One EMA update of a whole network (ResNet-50 by default: 25.6M parameters plus BN statistics): the engine's
`EMA` vs timm's `ModelEmaV3` vs a naive per-tensor loop, after checking that all three compute the same target.
"""

from __future__ import annotations

import copy

import timm
import torch
from timm.utils import ModelEmaV3
from torch import nn

from dlcvkit.bench.timing import check_equal, measure, record
from dlcvkit.engine.ema import EMA

BENCH = "ema"
REFERENCE = "timm"


class NaiveEMA:
    """ξ ← τξ + (1 − τ)θ one tensor at a time (two kernels per tensor), as many hand-written EMAs do."""

    def __init__(self, online: nn.Module, target: nn.Module, tau: float) -> None:
        self.online, self.target, self.tau = online, target, tau

    @torch.no_grad()
    def update(self) -> None:
        for xi, theta in zip(self.target.state_dict().values(), self.online.state_dict().values()):
            if xi.is_floating_point():
                xi.mul_(self.tau).add_(theta, alpha=1.0 - self.tau)
            else:
                xi.copy_(theta)


def ema_contenders(online: nn.Module, target: nn.Module, tau: float) -> dict:
    """name -> (update function, the target module it moves); each gets its own copy of `target`."""
    ours = copy.deepcopy(target)
    engine = EMA(online, ours, tau)
    reference = ModelEmaV3(online, decay=tau)  # fixed decay: no warm-up, foreach lerp over its state_dict
    reference.module.load_state_dict(target.state_dict())
    naive = NaiveEMA(online, copy.deepcopy(target), tau)
    return {
        "dlcvkit": (lambda: engine.update(0), ours),
        "timm": (lambda: reference.update(online), reference.module),
        "naive": (naive.update, naive.target),
    }


def check_same_targets(contenders: dict, reference: str = REFERENCE) -> None:
    """Apply one update with every contender and compare each target network with the reference's."""
    for update, _ in contenders.values():
        update()
    expected = contenders[reference][1].state_dict()
    for name, (_, target) in contenders.items():
        for key, value in target.state_dict().items():
            # the naive loop rounds twice (mul, then add) where lerp rounds once: not bit-identical
            check_equal(f"{name} ({key})", reference, expected[key], value, rtol=1e-5, atol=1e-6)


def bench_ema(model: str, *, tau: float, device: torch.device, repeats: int, warmup: int) -> list[dict]:
    """Records of each contender's update time on `model`'s parameters and buffers."""
    torch.manual_seed(0)
    online = timm.create_model(model).to(device).train()
    with torch.no_grad():  # BN statistics that differ from the target's, so averaging them is checked too
        for module in online.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(3)
    target = copy.deepcopy(online)
    with torch.no_grad():  # a target away from the online network: the update has something to do
        for tensor in target.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn_like(tensor), alpha=0.1)
    contenders = ema_contenders(online, target, tau)
    check_same_targets(contenders)
    numel = sum(t.numel() for t in online.state_dict().values())
    case = f"{model} {numel / 1e6:.1f}M"
    return [
        record(BENCH, case, name, measure(update, items=1, repeats=repeats, warmup=warmup, device=device),
               model=model, tensors=len(online.state_dict()), numel=numel)
        for name, (update, _) in contenders.items()
    ]
