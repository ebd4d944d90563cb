"""NIfTI reading and writing with nibabel: 2D images, and 3D volumes as stacks of 2D samples.

Array convention: the data array is used as stored, ``data[i, j]`` with ``i`` as the image row and
``j`` as the column, i.e. exactly what ``nibabel.Nifti1Image(array_hw, affine)`` writes. A PNG and a
NIfTI written from the same ``H×W`` array therefore load identically (see
:mod:`litenext_monai.io.image2d`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from .atomic import atomic_write

__all__ = [
    "NIFTI_SUFFIXES",
    "VolumeSlice",
    "is_nifti",
    "read_nifti_2d",
    "slice_volume",
    "slice_affine",
    "stack_slices",
    "write_nifti",
]

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | os.PathLike) -> bool:
    """Whether ``path`` ends in ``.nii`` or ``.nii.gz`` (any case)."""
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Image]:
    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj)
    except Exception as err:  # nibabel raises many types for damaged or truncated files
        raise ValueError(f"{path}: unreadable or truncated NIfTI file ({err})") from err
    return data, np.asarray(image.affine, dtype=np.float64), image


def _value_range(data: np.ndarray) -> tuple[float, float] | None:
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        return (float(min(info.min, 0)), float(info.max))
    return None


def read_nifti_2d(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Read a 2D NIfTI image.

    Accepted shapes: ``H×W``, ``H×W×1`` and ``H×W×1×1×C`` (the NIfTI vector layout used for colour).

    Returns:
        ``(array, meta)``: ``array`` is ``H×W`` or ``H×W×C`` in the stored dtype (scaled to float if
        the header has a slope); ``meta`` holds ``filename_or_obj``, ``spatial_shape``, ``affine``
        (4×4, voxel ``(row, column, 0)`` → world RAS mm) and ``value_range``.

    Raises:
        ValueError: unreadable file, or a 3D volume (use :func:`slice_volume`).
    """
    path = Path(path)
    data, affine, _ = _load(path)
    if data.ndim == 5 and data.shape[2] == 1 and data.shape[3] == 1:
        data = data[:, :, 0, 0, :]
    else:
        while data.ndim > 2 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim != 2:
            raise ValueError(
                f"{path}: NIfTI has shape {data.shape}, which is not 2D; "
                "slice volumes with litenext_monai.io.slice_volume (or prepare_dataset)"
            )
    meta = {
        "filename_or_obj": str(path),
        "spatial_shape": tuple(int(s) for s in data.shape[:2]),
        "affine": affine,
        "value_range": _value_range(data),
    }
    return np.ascontiguousarray(data), meta


@dataclass(frozen=True)
class VolumeSlice:
    """One 2D sample cut from a volume, with what is needed to put a prediction back.

    Attributes:
        array: ``H×W`` slice data (``H``, ``W`` = the two remaining volume axes, in order).
        index: position of the slice along ``axis``.
        axis: the sliced volume axis (0, 1 or 2).
        affine: 4×4 map of the slice voxel ``(row, column, 0)`` to world RAS mm.
        volume_shape: shape of the source volume.
        volume_affine: 4×4 affine of the source volume.
    """

    array: np.ndarray
    index: int
    axis: int
    affine: np.ndarray
    volume_shape: tuple[int, ...]
    volume_affine: np.ndarray


def slice_affine(volume_affine: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Affine of slice ``index`` along ``axis``: ``(row, col, 0)`` → the volume's world position.

    Rows and columns run along the two remaining volume axes in increasing order; the third
    column keeps the sliced axis so the matrix stays invertible.
    """
    others = [a for a in range(3) if a != axis]
    embed = np.zeros((4, 4))
    embed[others[0], 0] = 1.0
    embed[others[1], 1] = 1.0
    embed[axis, 2] = 1.0
    embed[axis, 3] = float(index)
    embed[3, 3] = 1.0
    return np.asarray(volume_affine, dtype=np.float64) @ embed


def slice_volume(path: str | os.PathLike, axis: int = 2) -> list[VolumeSlice]:
    """Cut a 3D NIfTI volume into 2D samples along ``axis``.

    Args:
        path: ``.nii``/``.nii.gz`` with a 3D volume (a trailing singleton 4th dimension is allowed).
        axis: volume axis to slice along; 2 gives the usual axial slices of an RAS-stored scan.

    Returns:
        One :class:`VolumeSlice` per index along ``axis``, in order.

    Raises:
        ValueError: unreadable file, not 3D, or bad axis.
    """
    path = Path(path)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    data, affine, _ = _load(path)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return [
        VolumeSlice(
            array=np.ascontiguousarray(np.take(data, k, axis=axis)),
            index=k,
            axis=axis,
            affine=slice_affine(affine, axis, k),
            volume_shape=tuple(int(s) for s in data.shape),
            volume_affine=affine,
        )
        for k in range(data.shape[axis])
    ]


def stack_slices(
    arrays: Sequence[np.ndarray],
    indices: Sequence[int],
    axis: int,
    reference: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    dtype: np.dtype | type = np.uint8,
) -> np.ndarray:
    """Put 2D predictions back into a volume with the geometry of ``reference``.

    Args:
        arrays: ``H×W`` slices, one per entry of ``indices``.
        indices: where each slice goes along ``axis``; indices not listed stay 0.
        axis: the axis the reference was sliced along.
        reference: the volume the slices came from (shape, affine and header are copied).
        out_path: when given, the volume is written there atomically as NIfTI.
        dtype: data type of the written volume.

    Returns:
        The assembled volume (shape of ``reference``'s first three dimensions).

    Raises:
        ValueError: mismatching counts or slice shapes, or an index outside the volume.
    """
    if len(arrays) != len(indices):
        raise ValueError(f"got {len(arrays)} slices but {len(indices)} indices")
    reference = Path(reference)
    data, affine, image = _load(reference)
    shape = tuple(int(s) for s in data.shape[:3])
    volume = np.zeros(shape, dtype=dtype)
    expected = tuple(s for a, s in enumerate(shape) if a != axis)
    for array, index in zip(arrays, indices, strict=True):
        if tuple(np.shape(array)) != expected:
            raise ValueError(
                f"slice {index} has shape {np.shape(array)}, expected {expected} for {reference}"
            )
        if not 0 <= index < shape[axis]:
            raise ValueError(f"slice index {index} outside 0..{shape[axis] - 1} of {reference}")
        selector = [slice(None)] * 3
        selector[axis] = index
        volume[tuple(selector)] = np.asarray(array).astype(dtype)
    if out_path is not None:
        header = image.header.copy()
        header.set_data_dtype(volume.dtype)
        header.set_data_shape(volume.shape)
        write_nifti(volume, affine, out_path, header=header)
    return volume


def write_nifti(
    array: np.ndarray,
    affine: np.ndarray | None,
    path: str | os.PathLike,
    header: nib.Nifti1Header | None = None,
) -> Path:
    """Write ``array`` as NIfTI-1 atomically (``affine=None`` means identity)."""
    data = np.asarray(array)
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    image = nib.Nifti1Image(data, affine, header=header)
    if header is not None:
        image.header.set_qform(affine, code=int(header["qform_code"]) or 1)
        image.header.set_sform(affine, code=int(header["sform_code"]) or 1)
    return atomic_write(path, lambda tmp: nib.save(image, str(tmp)))
