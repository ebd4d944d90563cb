"""Several classes: one-vs-rest MWL (scipy morphology oracle), Dice + CE (MONAI DiceCELoss oracle)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.losses import DiceCELoss
from scipy import ndimage

from litenext_monai.losses import (
    LiteNeXtLoss,
    MarginalWeightLoss,
    SoftmaxMarginalWeightLoss,
    multiclass_marginal_weight_map,
)
from litenext_monai.transforms import MarginalWeightMapd

W_M, W_O, W_B = 0.6, 0.3, 0.1


def _label_map(seed: int = 0, size: int = 24) -> torch.Tensor:
    """B×1×H×W label map with class 2 (nucleus) inside and touching class 1 (cytoplasm), plus noise blobs."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((2, 1, size, size), dtype=np.int64)
    yy, xx = np.mgrid[0:size, 0:size]
    for b in range(2):
        cy, cx = rng.uniform(8, size - 8, size=2)
        labels[b, 0][(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = 1
        labels[b, 0][(yy - cy) ** 2 + (xx - cx) ** 2 <= 9] = 2
        labels[b, 0, :3, -5:] = 2  # a class-2 object touching the image border
    return torch.from_numpy(labels)


def _scipy_weight(mask: np.ndarray, k: int) -> np.ndarray:
    """Eq. 8 with scipy morphology; outside the image is background (border_value=0)."""
    structure = np.ones((k, k), dtype=bool)
    dilated = ndimage.binary_dilation(mask, structure=structure).astype(np.float64)
    eroded = ndimage.binary_erosion(mask, structure=structure, border_value=0).astype(np.float64)
    return W_M * (dilated - eroded) + W_O * eroded + W_B * (1 - dilated)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_per_class_weight_maps_match_scipy_morphology(k: int) -> None:
    labels = _label_map()
    maps = multiclass_marginal_weight_map(labels, 2, kernel_size=k)
    assert maps.shape == (2, 2, 24, 24) and maps.dtype == torch.float32
    for b in range(2):
        for c in (1, 2):
            expected = _scipy_weight(labels[b, 0].numpy() == c, k)
            np.testing.assert_allclose(maps[b, c - 1].numpy(), expected, atol=1e-6)
    if k == 1:  # no margin band at all
        return
    # the border between two touching classes lies in the margin band of both classes
    edge = (labels[0, 0] == 1) & F.max_pool2d((labels == 2).float(), 3, 1, 1)[0, 0].bool()
    assert edge.any()
    assert torch.all(maps[0, 0][edge] == W_M) and torch.all(maps[0, 1][edge] == W_M)


def test_weight_map_transform_stacks_class_maps_and_names_the_file() -> None:
    labels = _label_map()[0].float()
    out = MarginalWeightMapd("label", num_classes=2, kernel_size=3)({"label": labels})
    torch.testing.assert_close(out["label_weight"], multiclass_marginal_weight_map(labels[None], 2, 3)[0])
    assert out["label_weight"].shape == (2, 24, 24)
    bad = MetaTensor(torch.full((1, 4, 4), 3.0), meta={"filename_or_obj": "/data/masks/case7.png"})
    with pytest.raises(ValueError, match=r"case7\.png.*0\.\.2"):
        MarginalWeightMapd("label", num_classes=2)({"label": bad})
    with pytest.raises(ValueError, match="1×H×W"):
        MarginalWeightMapd("label", num_classes=2)({"label": torch.zeros(2, 4, 4)})
    # binary behaviour unchanged: one map per mask channel
    binary = (labels > 0).float()
    assert MarginalWeightMapd("label")({"label": binary})["label_weight"].shape == (1, 24, 24)


def test_softmax_mwl_hand_computed_tiny_case() -> None:
    # three equal logits: p = 1/3 everywhere; k = 1 gives W = w_o on the class, w_b elsewhere
    logits = torch.zeros(1, 3, 1, 2)
    labels = torch.tensor([[[[1, 2]]]])
    value = SoftmaxMarginalWeightLoss(kernel_size=1)(logits, labels)
    expected = (W_O * math.log(3) + W_B * math.log(1.5)) / 2
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_softmax_mwl_matches_explicit_softmax_bce() -> None:
    g = torch.Generator().manual_seed(1)
    labels = _label_map()
    logits = torch.randn(2, 3, 24, 24, generator=g) * 3
    value = SoftmaxMarginalWeightLoss(kernel_size=5)(logits, labels)
    probs = torch.softmax(logits.double(), dim=1)
    terms = []
    for c in (1, 2):
        y = (labels[:, 0] == c).double()
        w = torch.from_numpy(np.stack([_scipy_weight(labels[b, 0].numpy() == c, 5) for b in range(2)]))
        terms.append(F.binary_cross_entropy(probs[:, c], y, weight=w, reduction="mean"))
    torch.testing.assert_close(value.double(), torch.stack(terms).mean(), rtol=1e-5, atol=1e-6)


def test_softmax_mwl_with_one_class_is_binary_mwl_on_the_logit_difference() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 2, 16, 16, generator=g)
    labels = (torch.rand(2, 1, 16, 16, generator=g) > 0.6).long()
    multi = SoftmaxMarginalWeightLoss()(logits, labels)
    binary = MarginalWeightLoss()(logits[:, 1:] - logits[:, :1], labels.float())
    torch.testing.assert_close(multi, binary)


def test_softmax_mwl_is_finite_for_saturated_logits() -> None:
    labels = torch.tensor([[[[0, 1, 2]]]])
    logits = torch.tensor([[[[200.0, -200.0, 0.0]], [[-200.0, 200.0, 0.0]], [[-200.0, -200.0, 300.0]]]])
    logits.requires_grad_(True)
    value = SoftmaxMarginalWeightLoss(kernel_size=1)(logits, labels)
    value.backward()
    assert torch.isfinite(value) and value.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(logits.grad).all()


def test_litenext_loss_multiclass_equals_dicece_plus_mwl_plus_serp() -> None:
    g = torch.Generator().manual_seed(3)
    labels = _label_map()
    logits = torch.randn(2, 3, 24, 24, generator=g, requires_grad=True)
    online, target = torch.randn(2, 16, generator=g), torch.randn(2, 16, generator=g)
    loss = LiteNeXtLoss(num_classes=2, supervised_weight=0.7, dice_weight=1.5, ce_weight=0.5, kernel_size=5)
    weight = multiclass_marginal_weight_map(labels, 2, kernel_size=5)
    out = loss(logits, labels.float(), weight_map=weight, online_embedding=online, target_embedding=target)
    assert set(out) == {"loss", "mwl", "dice", "ce", "serp"}
    dicece = DiceCELoss(
        include_background=False,
        to_onehot_y=True,
        softmax=True,
        smooth_nr=0.0,
        smooth_dr=1e-12,
        lambda_dice=1.5,
        lambda_ce=0.5,
    )(logits, labels)
    serp = (1 - F.cosine_similarity(online, target)).mean()
    mwl = SoftmaxMarginalWeightLoss(kernel_size=5)(logits, labels)  # computes its own map
    torch.testing.assert_close(out["mwl"], mwl)
    torch.testing.assert_close(out["loss"], dicece + 0.7 * mwl + serp)
    torch.testing.assert_close(out["ce"], F.cross_entropy(logits, labels[:, 0]))
    out["loss"].backward()
    assert logits.grad.abs().sum() > 0
    # without embeddings (validation) SeRP is absent; "none" drops the MWL term
    assert set(LiteNeXtLoss(num_classes=2, supervised="none")(logits, labels)) == {"loss", "dice", "ce"}


def test_multiclass_configuration_errors() -> None:
    for kind in ("bce", "wbce", "bbce", "focal"):
        with pytest.raises(ValueError, match="binary sigmoid loss"):
            LiteNeXtLoss(num_classes=2, supervised=kind, pos_weight=2.0 if kind == "wbce" else None)
    with pytest.raises(ValueError, match="ce_weight applies only"):
        LiteNeXtLoss(ce_weight=1.0)
    with pytest.raises(ValueError, match="num_classes"):
        LiteNeXtLoss(num_classes=0)
    loss = LiteNeXtLoss(num_classes=2, serp_weight=0.0)
    with pytest.raises(ValueError, match="B×3×H×W"):
        loss(torch.zeros(1, 2, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="label map target"):
        loss(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\[3\.0\].*0\.\.2"):
        loss(torch.zeros(1, 3, 8, 8), torch.full((1, 1, 8, 8), 3.0))
    with pytest.raises(ValueError, match="not class indices"):
        loss(torch.zeros(1, 3, 8, 8), torch.full((1, 1, 8, 8), 0.5))
