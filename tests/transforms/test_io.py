"""LoadImage2D(d): channel-first normalised MetaTensors, aligned across formats."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from litenext_monai.transforms import LoadImage2D, LoadImage2Dd


def test_png_image_with_nifti_mask_line_up(tmp_path: Path) -> None:
    rng = np.random.default_rng(50)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(np.dstack([image, np.zeros((20, 30), np.uint8)])).save(tmp_path / "img.png")  # RGBA
    mask = np.zeros((20, 30), np.uint8)
    mask[1:4, 22:29] = 5  # label value 5 in the top-right corner
    affine = np.diag([0.5, 0.7, 1.0, 1.0])
    nib.save(nib.Nifti1Image(mask, affine), tmp_path / "mask.nii.gz")
    out = LoadImage2Dd()({"image": str(tmp_path / "img.png"), "label": str(tmp_path / "mask.nii.gz")})
    img, lbl = out["image"], out["label"]
    assert isinstance(img, MetaTensor) and img.dtype == torch.float32
    assert img.shape == (3, 20, 30) and lbl.shape == (1, 20, 30)
    assert np.allclose(img.numpy(), np.moveaxis(image, -1, 0) / 255.0)
    assert np.array_equal(lbl[0].numpy(), (mask > 0).astype(np.float32))
    assert np.allclose(lbl.affine.numpy(), affine)
    assert list(img.meta["spatial_shape"]) == [20, 30] and img.meta["filename_or_obj"].endswith("img.png")


def test_channels_and_sixteen_bit(tmp_path: Path) -> None:
    grey = np.arange(600, dtype=np.uint16).reshape(20, 30) * 100
    Image.fromarray(grey).save(tmp_path / "g.png")
    three = LoadImage2D(channels=3)(tmp_path / "g.png")
    assert three.shape == (3, 20, 30) and np.allclose(three[1].numpy(), grey / 65535.0)
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 1] = 255
    Image.fromarray(rgb).save(tmp_path / "c.png")
    one = LoadImage2D(channels=1)(tmp_path / "c.png")
    assert one.shape == (1, 4, 5) and np.allclose(one.numpy(), 0.587)
    with pytest.raises(ValueError):
        LoadImage2D(channels=2)


def test_dicom_ct_window() -> None:
    path = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    out = LoadImage2D(modality="ct", window=(40, 400))(path)
    assert out.shape == (1, 128, 128)
    assert np.allclose(out[0].numpy(), np.clip((hu + 160) / 400, 0, 1), atol=1e-6)


def test_missing_keys_allowed(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    out = LoadImage2Dd(allow_missing_keys=True)({"image": str(tmp_path / "a.png")})
    assert out["image"].shape == (1, 4, 4) and "label" not in out
