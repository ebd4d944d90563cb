from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from litenext_monai.losses import SeRPLoss


def test_serp_matches_cosine_similarity():
    torch.manual_seed(0)
    a, b = torch.randn(5, 128), torch.randn(5, 128)
    expected = 1 - F.cosine_similarity(a, b, dim=1)
    torch.testing.assert_close(SeRPLoss()(a, b), expected.mean())
    torch.testing.assert_close(SeRPLoss(reduction="none")(a, b), expected)
    torch.testing.assert_close(SeRPLoss(reduction="sum")(a, b), expected.sum())


def test_serp_extremes():
    a = torch.tensor([[1.0, 2.0, 3.0]])
    assert SeRPLoss()(a, 4 * a).item() == pytest.approx(0.0, abs=1e-6)
    assert SeRPLoss()(a, -a).item() == pytest.approx(2.0, abs=1e-6)
    assert SeRPLoss()(torch.zeros(1, 3), a).item() == 1.0  # eps keeps a zero vector finite


def test_serp_stop_gradient_on_target():
    online = torch.randn(4, 16, requires_grad=True)
    target = torch.randn(4, 16, requires_grad=True)
    SeRPLoss()(online, target).backward()
    assert target.grad is None
    assert online.grad is not None and online.grad.abs().sum() > 0


def test_serp_bad_shapes():
    with pytest.raises(ValueError, match=r"\(4, 16\).*\(4, 8\)"):
        SeRPLoss()(torch.zeros(4, 16), torch.zeros(4, 8))
    with pytest.raises(ValueError):
        SeRPLoss()(torch.zeros(4, 16, 1), torch.zeros(4, 16, 1))
