"""Intensity normalisation per modality, mask binarisation and channel conversion."""

from __future__ import annotations

import numpy as np
import pytest

from litenext_monai.io import binarize_mask, normalize_intensity, to_channels


def test_modalities() -> None:
    assert np.allclose(normalize_intensity(np.array([0, 51, 255], np.uint8), "rgb"), [0, 0.2, 1])
    assert np.allclose(normalize_intensity(np.array([0, 65535], np.uint16), "natural"), [0, 1])
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    assert np.allclose(normalize_intensity(hu, "ct", window=(40, 400)), [0, 0, 0.5, 1, 1])
    ramp = np.arange(101, dtype=np.float64)
    assert np.allclose(normalize_intensity(ramp, "mr", percentiles=(10, 90)), np.clip((ramp - 10) / 80, 0, 1))
    assert normalize_intensity(ramp, "none").dtype == np.float32
    with pytest.raises(ValueError, match="unknown modality"):
        normalize_intensity(ramp, "pet")


def test_masks_and_channels() -> None:
    instances = np.array([[0, 3], [7, 0]])
    assert np.array_equal(binarize_mask(instances), [[0, 1], [1, 0]])
    assert np.array_equal(binarize_mask(instances, label_values=[7]), [[0, 0], [1, 0]])
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[0, 1, 2] = 255
    assert np.array_equal(binarize_mask(colour), [[0, 1], [0, 0]])
    rgb = np.ones((2, 2, 3), np.float32) * np.array([1.0, 0.0, 0.0])
    assert np.allclose(to_channels(rgb, 1)[..., 0], 0.299)
    assert to_channels(np.zeros((2, 2)), 3).shape == (2, 2, 3)
    with pytest.raises(ValueError):
        to_channels(np.zeros((2, 2, 4)), 1)
