"""NIfTI: 2D images, volume slicing with per-slice affines, and stacking predictions back."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine
from PIL import Image

from litenext_monai.io import read_image, read_nifti_2d, slice_volume, stack_slices

AFFINE = np.array([[0.0, 0.0, 3.0, -7.0], [0.0, 1.2, 0.0, 4.0], [0.9, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 1.0]])


def test_png_and_nifti_of_the_same_array_align(tmp_path: Path) -> None:
    array = np.zeros((20, 30), np.uint8)
    array[2:5, 20:28] = 255  # top-right block: a transposition would move it
    Image.fromarray(array).save(tmp_path / "a.png")
    nib.save(nib.Nifti1Image(array, np.eye(4)), tmp_path / "a.nii.gz")
    png, _ = read_image(tmp_path / "a.png")
    nii, meta = read_nifti_2d(tmp_path / "a.nii.gz")
    assert png.shape == nii.shape == (20, 30) and np.array_equal(png, nii)
    assert np.allclose(meta["affine"], np.eye(4))


def test_3d_nifti_is_refused_by_the_2d_reader(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4)), tmp_path / "v.nii")
    with pytest.raises(ValueError, match="slice_volume"):
        read_nifti_2d(tmp_path / "v.nii")


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slices_keep_index_and_world_position(tmp_path: Path, axis: int) -> None:
    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    nib.save(nib.Nifti1Image(volume, AFFINE), tmp_path / "v.nii.gz")
    slices = slice_volume(tmp_path / "v.nii.gz", axis)
    assert len(slices) == volume.shape[axis]
    for s in slices:
        assert np.array_equal(s.array, np.take(volume, s.index, axis=axis))
        voxel = [0, 0, 0]
        others = [a for a in range(3) if a != axis]
        voxel[axis], voxel[others[0]], voxel[others[1]] = s.index, 2, 3
        assert np.allclose(apply_affine(s.affine, [2, 3, 0]), apply_affine(AFFINE, voxel))
    stacked = stack_slices(
        [s.array for s in slices],
        [s.index for s in slices],
        axis,
        tmp_path / "v.nii.gz",
        tmp_path / "o.nii.gz",
        dtype=np.float32,
    )
    written = nib.load(str(tmp_path / "o.nii.gz"))
    assert np.array_equal(stacked, volume) and np.array_equal(np.asarray(written.dataobj), volume)
    assert np.allclose(written.affine, AFFINE)


def test_stack_slices_rejects_wrong_shapes(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.uint8), AFFINE), tmp_path / "v.nii.gz")
    with pytest.raises(ValueError, match="expected"):
        stack_slices([np.zeros((5, 5))], [0], 2, tmp_path / "v.nii.gz")
    with pytest.raises(ValueError, match="outside"):
        stack_slices([np.zeros((4, 5))], [6], 2, tmp_path / "v.nii.gz")
