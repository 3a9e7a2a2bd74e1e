import math

import pytest
import torch
from torch import nn

from dlcvkit.engine.ema import EMA, momentum_schedule


def _pair():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    target = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    return online, target


def test_momentum_schedule_matches_paper_formula():
    # tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2
    assert momentum_schedule(0, 100, 0.996) == pytest.approx(0.996)
    assert momentum_schedule(50, 100, 0.996) == pytest.approx(1 - 0.004 * 0.5)
    assert momentum_schedule(25, 100, 0.99) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2)
    assert momentum_schedule(100, 100, 0.99) == pytest.approx(1.0)


def test_fixed_tau_k_updates_equal_closed_form():
    online, target = _pair()
    xi0 = target[0].weight.detach().clone()
    theta = online[0].weight.detach().clone()
    ema = EMA(online, target, tau=0.9)
    for k in range(3):
        ema.update(k)
    # online fixed: xi_k = tau^k xi_0 + (1 - tau^k) theta
    expected = 0.9**3 * xi0 + (1 - 0.9**3) * theta
    torch.testing.assert_close(target[0].weight, expected, rtol=0, atol=1e-6)


def test_cosine_tau_and_buffers():
    online, target = _pair()
    online[1].running_mean.fill_(2.0)
    online[1].num_batches_tracked.fill_(7)
    target[1].running_mean.fill_(0.0)
    ema = EMA(online, target, tau=0.5, total_steps=2)
    xi0 = target[0].bias.detach().clone()
    theta = online[0].bias.detach().clone()
    ema.update(0)  # tau = 0.5
    ema.update(1)  # tau = 1 - 0.5 * (cos(pi/2) + 1) / 2 = 0.75
    torch.testing.assert_close(target[0].bias, 0.75 * (0.5 * xi0 + 0.5 * theta) + 0.25 * theta)
    # running_mean averaged like a parameter: 0 -> 1.0 -> 0.75 * 1 + 0.25 * 2 = 1.25
    torch.testing.assert_close(target[1].running_mean, torch.full((2,), 1.25))
    # integer buffer copied
    assert int(target[1].num_batches_tracked) == 7


def test_copy_mode_copies_float_buffers():
    online, target = _pair()
    online[1].running_var.fill_(3.0)
    EMA(online, target, tau=0.99, buffers="copy").update(0)
    torch.testing.assert_close(target[1].running_var, torch.full((2,), 3.0))


def test_mismatched_networks_are_rejected():
    with pytest.raises(ValueError, match="differ"):
        EMA(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)), tau=0.9)
