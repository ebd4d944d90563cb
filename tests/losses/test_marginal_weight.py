from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from litenext_monai.losses import MarginalWeightLoss, marginal_weight_map


def _random_blobs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth random blobs; some touch the image border."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=(0,) * (len(shape) - 2) + (3, 3))
    return (noise > 0.1).astype(np.float32)


def _scipy_weight_map(mask: np.ndarray, k: int, wm: float, wo: float, wb: float) -> np.ndarray:
    structure = np.ones((k, k), dtype=bool)
    out = np.empty(mask.shape, dtype=np.float64)
    for b in range(mask.shape[0]):
        for c in range(mask.shape[1]):
            m = mask[b, c] > 0.5
            sd = ndimage.binary_dilation(m, structure=structure, border_value=0).astype(float)
            se = ndimage.binary_erosion(m, structure=structure, border_value=0).astype(float)
            out[b, c] = wm * (sd - se) + wo * se + wb * (1 - sd)
    return out


@pytest.mark.parametrize("k", [1, 3, 9, 11])
def test_weight_map_matches_scipy_morphology(k):
    rng = np.random.default_rng(k)
    mask = _random_blobs(rng, (3, 2, 48, 40))
    mask[0, 0] = 1.0  # full mask: only the border band can be margin
    mask[0, 1] = 0.0  # empty mask: all background
    mask[1, 0, :10, :12] = 1.0  # block in the corner, touching two borders
    expected = _scipy_weight_map(mask, k, 0.6, 0.3, 0.1)
    got = marginal_weight_map(torch.from_numpy(mask), kernel_size=k)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    # the example must exercise all three weight levels, margins included
    levels = {0.1, 0.3} if k == 1 else {0.1, 0.3, 0.6}
    assert set(np.round(np.unique(expected), 6)) == levels


def test_weight_map_custom_weights_and_hand_example():
    mask = torch.zeros(1, 1, 5, 5)
    mask[0, 0, :3, :3] = 1.0
    # Hand-derived for k=3 with the outside counted as background: only (1, 1) has a fully
    # foreground 3×3 window; rows/cols 0..3 are within one pixel of the object.
    expected = torch.tensor(
        [
            [0.6, 0.6, 0.6, 0.6, 0.1],
            [0.6, 0.3, 0.6, 0.6, 0.1],
            [0.6, 0.6, 0.6, 0.6, 0.1],
            [0.6, 0.6, 0.6, 0.6, 0.1],
            [0.1, 0.1, 0.1, 0.1, 0.1],
        ]
    )
    torch.testing.assert_close(marginal_weight_map(mask, kernel_size=3)[0, 0], expected)
    custom = marginal_weight_map(mask, kernel_size=3, w_margin=2.0, w_object=3.0, w_background=5.0)[0, 0]
    assert custom[1, 1] == 3.0 and custom[0, 0] == 2.0 and custom[4, 4] == 5.0


def test_weight_map_binarises_and_has_no_gradient():
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 0.9
    mask.requires_grad_(True)
    w = marginal_weight_map(mask, kernel_size=3)
    assert not w.requires_grad
    torch.testing.assert_close(w, marginal_weight_map((mask.detach() > 0.5).float(), kernel_size=3))


@pytest.mark.parametrize("k", [0, 2, 4, -3, 3.0])
def test_weight_map_rejects_bad_kernel(k):
    with pytest.raises(ValueError, match="kernel_size"):
        marginal_weight_map(torch.zeros(1, 1, 8, 8), kernel_size=k)


def test_weight_map_rejects_bad_shape():
    with pytest.raises(ValueError, match=r"\(1, 8, 8\)"):
        marginal_weight_map(torch.zeros(1, 8, 8))


def _hand_bce(x: float, y: float) -> float:
    p = 1.0 / (1.0 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_mwl_hand_computed_value():
    mask = torch.zeros(1, 1, 5, 5)
    mask[0, 0, :3, :3] = 1.0
    weights = [[0.6] * 4 + [0.1] for _ in range(4)] + [[0.1] * 5]
    weights[1][1] = 0.3
    logits = torch.linspace(-3.0, 2.5, 25).reshape(1, 1, 5, 5)
    total = 0.0
    for i in range(5):
        for j in range(5):
            total += weights[i][j] * _hand_bce(float(logits[0, 0, i, j]), float(mask[0, 0, i, j]))
    loss = MarginalWeightLoss(kernel_size=3)
    assert loss(logits, mask).item() == pytest.approx(total / 25, rel=1e-5)
    assert MarginalWeightLoss(kernel_size=3, reduction="sum")(logits, mask).item() == pytest.approx(
        total, rel=1e-5
    )


def test_mwl_reductions_consistent():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    y = (torch.rand(2, 3, 16, 16) > 0.6).float()
    per_pixel = MarginalWeightLoss(reduction="none")(x, y)
    assert per_pixel.shape == (2, 3, 16, 16)
    torch.testing.assert_close(MarginalWeightLoss(reduction="sum")(x, y), per_pixel.sum())
    torch.testing.assert_close(MarginalWeightLoss()(x, y), per_pixel.mean())


def test_mwl_uses_given_weight():
    torch.manual_seed(1)
    x = torch.randn(2, 1, 12, 12)
    y = (torch.rand(2, 1, 12, 12) > 0.5).float()
    ones = torch.ones_like(x)
    torch.testing.assert_close(MarginalWeightLoss()(x, y, ones), F.binary_cross_entropy_with_logits(x, y))
    doubled = MarginalWeightLoss()(x, y, 2 * ones)
    torch.testing.assert_close(doubled, 2 * F.binary_cross_entropy_with_logits(x, y))


def test_mwl_stable_for_large_logits_and_differentiable():
    x = torch.tensor([[[[100.0, -100.0], [100.0, -100.0]]]], requires_grad=True)
    y = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])
    loss = MarginalWeightLoss(kernel_size=1)(x, y)
    # per pixel: w_b*100, w_o*100, w_o*0, w_b*0 (k = 1: object weight on fg, background on bg)
    assert loss.item() == pytest.approx((0.1 * 100 + 0.3 * 100) / 4, rel=1e-5)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_mwl_bad_shapes():
    loss = MarginalWeightLoss()
    with pytest.raises(ValueError, match=r"\(1, 1, 8, 8\).*\(1, 2, 8, 8\)"):
        loss(torch.zeros(1, 1, 8, 8), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="weight shape"):
        loss(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError):
        MarginalWeightLoss(reduction="avg")
