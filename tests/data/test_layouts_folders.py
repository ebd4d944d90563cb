"""The generic images/ + masks/ layout: NIfTI volumes and DICOM series become 2D slices."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.uid import generate_uid

from litenext_monai.data import prepare_dataset
from litenext_monai.io import stack_slices
from tests.dicom_helpers import write_dicom_slice

from .layout_helpers import check_prepared, rect_mask


def test_dicom_series_and_nifti_volumes(tmp_path: Path) -> None:
    rng = np.random.default_rng(20)
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "masks").mkdir()
    expected, hu = {}, {}
    h, w, s = 12, 16, 4
    for p in range(3):
        series = generate_uid()
        stored = rng.integers(0, 2000, (s, h, w))
        # File names run opposite to the slice positions: sorting must use the positions.
        for k in range(s):
            write_dicom_slice(
                raw / "images" / f"ct{p}" / f"{s - k:03d}.dcm",
                stored[k].astype(np.int16),
                series_uid=series,
                instance=s - k,
                position=(-10.0, 5.0, 2.5 * k),
                spacing=(0.8, 0.6),
                modality="CT",
                patient_id=f"PAT{p}",
                rescale=(1, -1024),
            )
        masks = np.stack([rect_mask(h, w, k, 2, k + 5, 9 + p) for k in range(s)], axis=-1).astype(np.uint8)
        nib.save(nib.Nifti1Image(masks, np.eye(4)), raw / "masks" / f"ct{p}.nii.gz")
        for k in range(s):
            expected[f"ct{p}_s{k:03d}"] = masks[..., k].astype(bool)
            hu[f"ct{p}_s{k:03d}"] = stored[k].astype(np.float32) - 1024
    volume = rng.normal(size=(10, 14, 3)).astype(np.float32)
    vol_mask = np.zeros((10, 14, 3), np.uint8)
    vol_mask[2:7, 3:11, 1] = 1
    affine = np.array([[0, 0, 2.0, 5], [0, 1.5, 0, -3], [0.7, 0, 0, 1], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(volume, affine), raw / "images" / "mr.nii.gz")
    nib.save(nib.Nifti1Image(vol_mask, affine), raw / "masks" / "mr_seg.nii.gz")
    for k in range(3):
        expected[f"mr_s{k:03d}"] = vol_mask[..., k].astype(bool)
    result = prepare_dataset("folders", raw, tmp_path / "out", ratios=(0.5, 0.25, 0.25))
    datalist = check_prepared(tmp_path / "out", expected)
    entries = {e["case_id"]: e for key in ("training", "validation", "test") for e in datalist[key]}
    for case, values in hu.items():
        written = nib.load(str(tmp_path / "out" / entries[case]["image"]))
        assert np.allclose(np.asarray(written.dataobj), values), f"{case}: HU values or slice order wrong"
        # DICOM LPS → RAS: x and y flip sign; the slice position is k * 2.5 mm along z.
        k = entries[case]["slice_index"]
        assert np.allclose(written.affine @ [0, 0, 0, 1], [10.0, -5.0, 2.5 * k, 1])
        assert np.allclose(written.affine @ [1, 0, 0, 1], [10.0, -5.8, 2.5 * k, 1])  # one row = 0.8 mm
    where = {c: key for key, ids in result.splits.items() for c in ids}
    for prefix in ("ct0", "ct1", "ct2", "mr"):
        assert len({where[c] for c in where if c.startswith(prefix + "_")}) == 1, (
            f"{prefix} split across sets"
        )
    # Predictions written back land in the source volume's geometry.
    slices = [
        np.asarray(nib.load(str(tmp_path / "out" / entries[f"mr_s{k:03d}"]["label"])).dataobj)
        for k in range(3)
    ]
    stacked = stack_slices(slices, [0, 1, 2], 2, raw / "images" / "mr.nii.gz", tmp_path / "pred.nii.gz")
    back = nib.load(str(tmp_path / "pred.nii.gz"))
    assert np.array_equal(stacked, vol_mask) and np.allclose(back.affine, affine)
    assert json.loads((tmp_path / "out" / "split.json").read_text())["split_hash"] == datalist["split_hash"]
