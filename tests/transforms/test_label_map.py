"""Label-map loading: class values kept, geometry as the image loader's, clear errors naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from litenext_monai.io import write_nifti
from litenext_monai.transforms import DualViewd, LoadImage2Dd, LoadLabelMap2Dd, MarginalWeightMapd


def _labels() -> np.ndarray:
    labels = np.zeros((24, 20), np.uint8)
    labels[4:16, 3:15] = 1
    labels[7:12, 6:11] = 2
    return labels


def test_png_and_nifti_label_maps_load_with_their_values(tmp_path: Path) -> None:
    Image.fromarray(_labels()).save(tmp_path / "lab.png")
    Image.fromarray(np.full((24, 20), 80, np.uint8)).save(tmp_path / "img.png")
    d = LoadImage2Dd(keys="image", label_keys=[])({"image": str(tmp_path / "img.png")})
    d = {**d, **LoadLabelMap2Dd("label", num_classes=2)({"label": str(tmp_path / "lab.png")})}
    assert d["label"].shape == (1, 24, 20) and d["label"].dtype == torch.float32
    assert np.array_equal(d["label"][0].numpy(), _labels())
    assert torch.equal(d["label"].affine, d["image"].affine)
    assert d["label"].meta["filename_or_obj"].endswith("lab.png")
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    nii = write_nifti(_labels(), affine, tmp_path / "lab.nii.gz")
    loaded = LoadLabelMap2Dd("label", num_classes=2)({"label": str(nii)})["label"]
    assert np.array_equal(loaded[0].numpy(), _labels()) and np.allclose(loaded.affine.numpy(), affine)


def test_label_map_survives_augmentation_and_gives_per_class_weights(tmp_path: Path) -> None:
    Image.fromarray(_labels()).save(tmp_path / "lab.png")
    d = LoadLabelMap2Dd("label", num_classes=2)({"label": str(tmp_path / "lab.png")})
    d["image"] = torch.rand(3, 24, 20)
    dual = DualViewd(keys=("image", "label"), prob_rotate=1.0)
    dual.set_random_state(0)
    d = MarginalWeightMapd("label", num_classes=2, kernel_size=3)(dual(d))
    assert set(torch.unique(d["label"]).tolist()) <= {0.0, 1.0, 2.0}  # nearest neighbour keeps classes
    assert d["label_weight"].shape == (2, 24, 20)


def test_bad_label_maps_name_the_file(tmp_path: Path) -> None:
    Image.fromarray(np.where(_labels() > 0, 255, 0).astype(np.uint8)).save(tmp_path / "binary255.png")
    with pytest.raises(ValueError, match=r"binary255\.png.*\[255\].*0\.\.2"):
        LoadLabelMap2Dd("label", num_classes=2)({"label": str(tmp_path / "binary255.png")})
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = (1, 2, 0)
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    with pytest.raises(ValueError, match=r"colour\.png.*one channel"):
        LoadLabelMap2Dd("label", num_classes=2)({"label": str(tmp_path / "colour.png")})
