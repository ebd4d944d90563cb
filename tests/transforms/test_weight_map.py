from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from litenext_monai.losses import marginal_weight_map
from litenext_monai.transforms import MarginalWeightMap, MarginalWeightMapd


def _mask(rng: np.random.Generator, channels: int = 2) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal((channels, 40, 36)), sigma=(0, 3, 3))
    return (noise > 0).astype(np.uint8)


def test_array_transform_matches_scipy_oracle():
    mask = _mask(np.random.default_rng(0))
    k = 5
    expected = np.empty(mask.shape)
    for c in range(mask.shape[0]):
        sd = ndimage.binary_dilation(mask[c], structure=np.ones((k, k)), border_value=0)
        se = ndimage.binary_erosion(mask[c], structure=np.ones((k, k)), border_value=0)
        expected[c] = 0.6 * (sd & ~se) + 0.3 * se + 0.1 * ~sd
    out = MarginalWeightMap(kernel_size=k)(mask)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("container", ["numpy", "tensor", "meta"])
def test_dict_transform_equals_function(container):
    mask = _mask(np.random.default_rng(1), channels=1) * 255  # binarised at 0.5
    value = {"numpy": mask, "tensor": torch.from_numpy(mask), "meta": MetaTensor(torch.from_numpy(mask))}[
        container
    ]
    out = MarginalWeightMapd(keys="label")({"label": value, "image": "untouched"})
    weight = out["label_weight"]
    assert type(weight) is type(value)
    assert out["image"] == "untouched" and out["label"] is value
    reference = marginal_weight_map(torch.from_numpy(mask > 0).float()[None])[0]
    np.testing.assert_allclose(np.asarray(weight), reference.numpy(), atol=1e-7)


def test_dict_transform_postfix_and_missing_keys():
    mask = np.zeros((1, 8, 8), dtype=np.float32)
    out = MarginalWeightMapd(keys=["label", "other"], output_key_postfix="w", allow_missing_keys=True)(
        {"label": mask}
    )
    assert set(out) == {"label", "label_w"}
    np.testing.assert_allclose(out["label_w"], 0.1)
    with pytest.raises(KeyError):
        MarginalWeightMapd(keys="other")({"label": mask})
    with pytest.raises(ValueError, match="C×H×W"):
        MarginalWeightMap()(np.zeros((8, 8)))
