from __future__ import annotations

import math

import pytest
import torch

from litenext_monai.losses import SoftDiceLoss


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_dice_hand_computed():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, -3.0]]], [[[1.0, 1.0], [-2.0, 0.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]], [[[0.0, 1.0], [0.0, 0.0]]]])
    expected = []
    for b in range(2):
        p = [_sig(v) for v in logits[b, 0].flatten().tolist()]
        y = target[b, 0].flatten().tolist()
        inter = sum(pi * yi for pi, yi in zip(p, y, strict=True))
        expected.append(1 - 2 * inter / (sum(p) + sum(y) + 1e-12))
    per_image = SoftDiceLoss(reduction="none")(logits, target)
    assert per_image.shape == (2, 1)
    assert per_image.flatten().tolist() == pytest.approx(expected, rel=1e-6)
    assert SoftDiceLoss()(logits, target).item() == pytest.approx(sum(expected) / 2, rel=1e-6)
    assert SoftDiceLoss(reduction="sum")(logits, target).item() == pytest.approx(sum(expected), rel=1e-6)


def test_dice_per_channel():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    y = (torch.rand(2, 3, 8, 8) > 0.5).float()
    per = SoftDiceLoss(reduction="none")(x, y)
    assert per.shape == (2, 3)
    p = torch.sigmoid(x[1, 2])
    manual = 1 - 2 * (p * y[1, 2]).sum() / (p.sum() + y[1, 2].sum() + 1e-12)
    torch.testing.assert_close(per[1, 2], manual)


def test_dice_empty_mask_is_one_with_zero_gradient():
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    loss = SoftDiceLoss()(x, torch.zeros(1, 1, 8, 8))
    assert loss.item() == 1.0
    loss.backward()
    assert torch.count_nonzero(x.grad) == 0


def test_dice_perfect_prediction_near_zero():
    y = torch.zeros(1, 1, 8, 8)
    y[..., 2:5, 2:5] = 1
    assert SoftDiceLoss()(100 * (2 * y - 1), y).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_bad_shapes():
    with pytest.raises(ValueError, match=r"\(1, 1, 8, 8\).*\(1, 1, 8, 4\)"):
        SoftDiceLoss()(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 4))
