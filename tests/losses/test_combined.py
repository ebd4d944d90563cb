from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from litenext_monai.losses import LiteNeXtLoss


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 16, 16, generator=g)
    y = (torch.rand(2, 1, 16, 16, generator=g) > 0.7).float()
    online = torch.randn(2, 32, generator=g)
    target = torch.randn(2, 32, generator=g)
    return x, y, online, target


def _bce_terms(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """-log p on positives and -log(1-p) on negatives, from log-sigmoid."""
    return -F.logsigmoid(x) * y, -F.logsigmoid(-x) * (1 - y)


def _dice(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(x)
    return (1 - 2 * (p * y).sum((2, 3)) / (p.sum((2, 3)) + y.sum((2, 3)) + 1e-12)).mean()


def test_default_is_paper_objective(batch):
    x, y, online, target = batch
    weight = torch.rand_like(x)
    out = LiteNeXtLoss()(x, y, weight_map=weight, online_embedding=online, target_embedding=target)
    assert set(out) == {"loss", "mwl", "dice", "serp"}
    pos, neg = _bce_terms(x, y)
    torch.testing.assert_close(out["mwl"], (weight * (pos + neg)).mean())
    torch.testing.assert_close(out["dice"], _dice(x, y))
    torch.testing.assert_close(out["serp"], (1 - F.cosine_similarity(online, target)).mean())
    torch.testing.assert_close(out["loss"], out["mwl"] + out["dice"] + out["serp"])
    assert all(v.ndim == 0 for v in out.values())


def test_weighted_total_and_gradient(batch):
    x, y, online, target = batch
    x = x.clone().requires_grad_(True)
    loss = LiteNeXtLoss(supervised="bce", supervised_weight=0.5, dice_weight=2.0, serp_weight=3.0)
    out = loss(x, y, online_embedding=online, target_embedding=target)
    torch.testing.assert_close(out["loss"], 0.5 * out["bce"] + 2.0 * out["dice"] + 3.0 * out["serp"])
    out["loss"].backward()
    assert x.grad.abs().sum() > 0


def test_serp_skipped_without_embeddings_and_zero_weights_absent(batch):
    x, y, online, target = batch
    assert set(LiteNeXtLoss()(x, y)) == {"loss", "mwl", "dice"}
    out = LiteNeXtLoss(dice_weight=0.0)(x, y, online_embedding=online, target_embedding=target)
    assert set(out) == {"loss", "mwl", "serp"}
    loss = LiteNeXtLoss(supervised="none", serp_weight=0.0)
    assert loss.pixel_loss is None and loss.serp_loss is None
    out = loss(x, y, online_embedding=online, target_embedding=target)
    assert set(out) == {"loss", "dice"}
    torch.testing.assert_close(out["loss"], out["dice"])
    assert set(LiteNeXtLoss(supervised_weight=0.0)(x, y)) == {"loss", "dice"}


def test_bce(batch):
    x, y, _, _ = batch
    pos, neg = _bce_terms(x, y)
    out = LiteNeXtLoss(supervised="bce", dice_weight=0, serp_weight=0)(x, y)
    torch.testing.assert_close(out["bce"], (pos + neg).mean())
    torch.testing.assert_close(out["loss"], out["bce"])


def test_wbce(batch):
    x, y, _, _ = batch
    pos, neg = _bce_terms(x, y)
    out = LiteNeXtLoss(supervised="wbce", pos_weight=3.5)(x, y)
    torch.testing.assert_close(out["wbce"], (3.5 * pos + neg).mean())
    reference = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(3.5))(x, y)
    torch.testing.assert_close(out["wbce"], reference)


def test_bbce_beta_by_hand(batch):
    x, y, _, _ = batch
    y_np = y.numpy()
    beta = float((y_np == 0).sum()) / y_np.size
    p = 1 / (1 + np.exp(-x.double().numpy()))
    per_pixel = -(beta * y_np * np.log(p) + (1 - beta) * (1 - y_np) * np.log(1 - p))
    out = LiteNeXtLoss(supervised="bbce")(x, y)
    assert out["bbce"].item() == pytest.approx(per_pixel.mean(), rel=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 2.0, 3.0])
def test_focal_hand_formula(batch, gamma):
    x, y, _, _ = batch
    p = torch.sigmoid(x.double())
    pt = torch.where(y > 0.5, p, 1 - p)
    expected = (-((1 - pt) ** gamma) * torch.log(pt)).mean()
    out = LiteNeXtLoss(supervised="focal", focal_gamma=gamma)(x, y)
    assert out["focal"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_mwl_weight_map_computed_when_absent():
    x = torch.zeros(1, 1, 5, 5)
    y = torch.zeros(1, 1, 5, 5)
    y[..., :3, :3] = 1
    # x = 0 gives BCE = log 2 everywhere; with k = 3: one interior pixel (0.3), 15 margin (0.6), 9 bg (0.1)
    out = LiteNeXtLoss(kernel_size=3, dice_weight=0)(x, y)
    assert out["mwl"].item() == pytest.approx(np.log(2) * (0.3 + 15 * 0.6 + 9 * 0.1) / 25, rel=1e-6)


def test_weight_map_ignored_by_other_kinds(batch):
    x, y, _, _ = batch
    loss = LiteNeXtLoss(supervised="bce")
    torch.testing.assert_close(loss(x, y)["bce"], loss(x, y, weight_map=torch.rand_like(x))["bce"])


def test_invalid_configurations(batch):
    x, y, online, _ = batch
    with pytest.raises(ValueError, match="supervised"):
        LiteNeXtLoss(supervised="dice")
    with pytest.raises(ValueError, match="pos_weight"):
        LiteNeXtLoss(supervised="wbce")
    with pytest.raises(ValueError, match="pos_weight"):
        LiteNeXtLoss(supervised="bce", pos_weight=2.0)
    with pytest.raises(ValueError, match="dice_weight"):
        LiteNeXtLoss(dice_weight=-1.0)
    with pytest.raises(ValueError, match="at least one"):
        LiteNeXtLoss(supervised="none", dice_weight=0.0, serp_weight=0.0)
    with pytest.raises(ValueError, match="together"):
        LiteNeXtLoss()(x, y, online_embedding=online)
    with pytest.raises(ValueError, match="No loss component"):
        LiteNeXtLoss(supervised="none", dice_weight=0.0)(x, y)
    with pytest.raises(ValueError, match=r"\(2, 1, 16, 16\).*\(2, 1, 8, 8\)"):
        LiteNeXtLoss()(x, y[..., :8, :8])
