import math

import pytest
import torch

from dlcvkit.engine.schedule import lr_factor, set_lr


def test_warmup_is_linear_and_starts_above_zero():
    # 4 warm-up steps: (k + 1) / 4
    assert [lr_factor(k, 100, warmup_steps=4) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]


def test_cosine_after_warmup_hand_computed():
    # total 14, warm-up 4 -> decay span 10; step 4 is the start (1.0), step 9 is half way (0.5), step 14 the end.
    assert lr_factor(4, 14, 4) == pytest.approx(1.0)
    assert lr_factor(9, 14, 4) == pytest.approx(0.5)
    assert lr_factor(6, 14, 4) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))
    assert lr_factor(14, 14, 4) == pytest.approx(0.0, abs=1e-12)


def test_floor_and_poly_and_constant():
    # floor 0.1: 0.1 + 0.9 * shape
    assert lr_factor(5, 10, 0, "cosine", min_ratio=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(10, 10, 0, "cosine", min_ratio=0.1) == pytest.approx(0.1)
    # poly with power 2 at 3/4 of the way: (1 - 0.75)^2 = 0.0625
    assert lr_factor(3, 4, 0, "poly", power=2.0) == pytest.approx(0.0625)
    assert lr_factor(50, 100, 10, "constant") == 1.0
    # past the end the factor stays at the floor
    assert lr_factor(20, 10, 0, "cosine", min_ratio=0.2) == pytest.approx(0.2)


def test_set_lr_scales_each_group_base_lr():
    p, q = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p], "base_lr": 0.1}, {"params": [q], "base_lr": 0.01}], lr=0.1)
    set_lr(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.005]
