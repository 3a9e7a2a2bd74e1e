"""Segmentation losses by name (dlcvkit/models/seg_losses.py): the default is exactly F.cross_entropy, the others
smp's on the same tensors and hand formulas; class weights and the ignored label against independent values."""

import math

import pytest
import segmentation_models_pytorch.losses as smp_losses
import torch
import torch.nn.functional as F

from dlcvkit.errors import DlcvkitError
from dlcvkit.models.seg_losses import SEG_LOSSES, build_seg_loss


def _batch(seed: int = 0, ignored: int | None = None):
    """Logits `2 7 6 5` and labels `2 6 5` (every class present); with `ignored`, a quarter of the labels are it."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 7, 6, 5, generator=g) * 2
    target = torch.arange(60).reshape(2, 6, 5) % 7
    target = target[:, torch.randperm(6, generator=g)]
    if ignored is not None:
        target = target.masked_fill(torch.rand(2, 6, 5, generator=g) < 0.25, ignored)
    return logits, target


def test_default_ce_is_exactly_torch_cross_entropy():
    logits, target = _batch()
    assert torch.equal(build_seg_loss("ce")(logits, target), F.cross_entropy(logits, target))


def test_weighted_ce_and_its_ignored_label_hand_computed():
    # 2 pixels of 3 classes. A: logits log(1, 2, 1) -> p = (1/4, 1/2, 1/4), label 1: -log p = log 2.
    # B: logits 0 -> p = 1/3 each, label 0: log 3. Weights (3, 1, 1): (1 log 2 + 3 log 3) / (1 + 3).
    logits = torch.tensor([[0.0, math.log(2), 0.0], [0.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 2)
    target = torch.tensor([[[1, 0]]])
    loss = build_seg_loss("ce", [3.0, 1.0, 1.0], num_classes=3)
    assert loss(logits, target).item() == pytest.approx((math.log(2) + 3 * math.log(3)) / 4, rel=1e-6)
    # label 0 ignored: only A counts, its weight cancels
    ignoring = build_seg_loss("ce", [3.0, 1.0, 1.0], ignore_index=0, num_classes=3)
    assert ignoring(logits, target).item() == pytest.approx(math.log(2), rel=1e-6)


def test_ce_with_weights_and_ignore_index_is_torchs():
    logits, target = _batch(1, ignored=255)
    weights = [0.5, 1, 2, 1, 1, 3, 0]
    expected = F.cross_entropy(logits, target, weight=torch.tensor(weights), ignore_index=255)
    assert torch.equal(build_seg_loss("ce", weights, 255)(logits, target), expected)


@pytest.mark.parametrize("ignore", [None, 255, 6])
def test_smp_losses_are_smps_on_the_same_tensors(ignore):
    logits, target = _batch(2, ignored=ignore)
    expected = {
        "dice": smp_losses.DiceLoss("multiclass", ignore_index=ignore)(logits, target),
        "focal": smp_losses.FocalLoss("multiclass", ignore_index=ignore)(logits, target),
        "lovasz": smp_losses.LovaszLoss("multiclass", ignore_index=ignore)(logits, target),
    }
    expected["ce+dice"] = F.cross_entropy(logits, target, ignore_index=-100 if ignore is None else ignore) \
        + expected["dice"]
    for name, value in expected.items():
        assert torch.equal(build_seg_loss(name, ignore_index=ignore)(logits, target), value), name


def test_dice_and_focal_hand_formulas():
    logits, target = _batch(3)
    p = logits.softmax(1)
    t = F.one_hot(target, 7).permute(0, 3, 1, 2).float()
    # Dice (Milletari et al. 2016, soft): 1 - 2 |P T| / (|P| + |T|) per class over the batch, mean over classes
    dice = 1 - 2 * (p * t).sum((0, 2, 3)) / (p.sum((0, 2, 3)) + t.sum((0, 2, 3)))
    torch.testing.assert_close(build_seg_loss("dice")(logits, target), dice.mean())
    # focal (Lin et al. 2017, eq. 4, gamma 2, no alpha), smp's multiclass form: a sigmoid focal loss per class
    # (one-vs-rest), mean over pixels, then over classes
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    focal = ((1 - torch.exp(-bce)) ** 2 * bce).mean((0, 2, 3))
    torch.testing.assert_close(build_seg_loss("focal")(logits, target), focal.mean())
    # with class weights, the weighted mean of the same per-class losses
    w = torch.tensor([1.0, 0, 2, 0, 0, 1, 4])
    torch.testing.assert_close(build_seg_loss("dice", w.tolist())(logits, target), (dice * w).sum() / w.sum())
    torch.testing.assert_close(build_seg_loss("focal", w.tolist())(logits, target), (focal * w).sum() / w.sum())


@pytest.mark.parametrize("name", SEG_LOSSES)
def test_ignored_pixels_add_nothing(name):
    # the loss with labels 255 ignored equals the loss of the kept pixels alone (as one image `1 c n 1`)
    logits, target = _batch(4, ignored=255)
    kept = target != 255
    alone = build_seg_loss(name)(logits.permute(1, 0, 2, 3)[:, kept][None, :, :, None], target[kept][None, :, None])
    torch.testing.assert_close(build_seg_loss(name, ignore_index=255)(logits, target), alone)


@pytest.mark.parametrize("name, weights, message", [
    ("lovasz", [1.0] * 7, "loss.class_weights do not apply to loss.name='lovasz' (smp's LovaszLoss takes no class "
                          "weights); they weight ce, dice, focal, ce+dice: drop them or choose one of those"),
    ("ce", [1.0, 2.0], "loss.class_weights has 2 values: give one per class (7, in class-id order), or [] for none"),
    ("dice", [1.0] * 6 + [-1.0], "loss.class_weights=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0]: each must be a finite "
                                 "number >= 0, and one at least > 0"),
    ("ce+dice", [0.0] * 7, "loss.class_weights=[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]: each must be"),
    ("focal", [math.nan] + [1.0] * 6, "loss.class_weights=[nan, 1.0"),
    ("ce", [math.inf] + [1.0] * 6, "loss.class_weights=[inf, 1.0"),
])
def test_bad_class_weights_are_refused(name, weights, message):
    with pytest.raises(DlcvkitError) as refused:
        build_seg_loss(name, weights)
    assert str(refused.value).startswith(message)
