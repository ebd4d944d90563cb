"""Generic ``images/`` + ``masks/`` folders, for in-house data in any supported format.

Pairs are matched by name (a mask may add ``_mask``/``_seg``/``_label``). Each image may be

- a 2D file (PNG, JPEG, BMP, TIFF, GIF, 2D NIfTI, single-frame DICOM) with a 2D mask;
- a 3D NIfTI volume with a NIfTI mask volume of the same shape, cut into 2D slices along
  ``axis``;
- a multi-frame DICOM file, or a folder holding one DICOM series, with a NIfTI mask volume
  ``H×W×S`` in the order :func:`~litenext_monai.io.read_dicom_series` sorts the slices (by
  position).

Slices of one volume (and all images of one DICOM patient) share a ``patient`` so they stay in
one split; every slice keeps its ``source`` volume, ``axis`` and ``slice_index`` in the datalist,
so predictions can be stacked back with :func:`~litenext_monai.io.stack_slices`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

from litenext_monai.io import (
    is_dicom,
    is_nifti,
    read_dicom_frames,
    read_dicom_series,
    slice_affine,
    slice_volume,
)
from litenext_monai.io.dicom import patient_key

from ..validation import ValidationReport
from .base import Case, Layout, image_loader, mask_loader, natural_key

__all__ = ["FOLDERS"]

_MASK_SUFFIXES = ("", "_mask", "_seg", "_label", "_labels", "_gt")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.is_file() else name


def _nifti_ndim(path: Path) -> int:
    try:
        shape = [s for s in nib.load(str(path)).shape]
    except Exception:  # empty or damaged: read as a 2D case, whose loader reports it with the file name
        return 2
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
    return len(shape)


def _volume_cases(case: str, image: Path, mask: Path, axis: int, report: ValidationReport) -> list[Case]:
    """Slices of a NIfTI image volume and its NIfTI mask volume."""

    @lru_cache(maxsize=1)
    def volumes():
        return slice_volume(image, axis), slice_volume(mask, axis)

    try:
        n_slices = nib.load(str(image)).shape[axis]
    except Exception as err:  # nibabel raises many types for damaged files
        report.error("unreadable", image, str(err))
        return []
    cases = []
    for k in range(n_slices):

        def load_image(k=k):
            s = volumes()[0][k]
            return s.array, {"affine": s.affine, "spatial_shape": s.array.shape}

        def load_mask(k=k):
            slices = volumes()[1]
            if len(slices) != n_slices:
                raise ValueError(f"{mask}: {len(slices)} slices along axis {axis}, image has {n_slices}")
            return [slices[k].array]

        cases.append(
            Case(
                f"{case}_s{k:03d}",
                load_image,
                load_mask,
                str(image),
                [str(mask)],
                patient=case,
                extra={"source": image.name, "axis": axis, "slice_index": k},
            )
        )
    return cases


def _dicom_volume_cases(case: str, image: Path, mask: Path, report: ValidationReport) -> list[Case]:
    """Slices of a DICOM series folder or multi-frame file, with a NIfTI mask volume ``H×W×S``."""

    @lru_cache(maxsize=1)
    def load():
        if image.is_dir():
            volume, meta = read_dicom_series(image)
            affines = [slice_affine(meta["affine"], 2, k) for k in range(volume.shape[-1])]
            slices = [volume[..., k] for k in range(volume.shape[-1])]
        else:
            frames = read_dicom_frames(image)
            slices = [f for f, _ in frames]
            affines = [m["affine"] for _, m in frames]
        mask_volume = np.asarray(nib.load(str(mask)).dataobj)
        return slices, affines, mask_volume

    try:
        slices, _, _ = load()
    except (OSError, ValueError) as err:
        report.error("unreadable", image, str(err))
        return []
    patient = _dicom_patient(image)
    cases = []
    for k in range(len(slices)):

        def load_image(k=k):
            s, a, _ = load()
            return s[k], {"affine": a[k], "spatial_shape": s[k].shape[:2]}

        def load_mask(k=k):
            s, _, m = load()
            if m.ndim != 3 or m.shape[-1] != len(s):
                raise ValueError(
                    f"{mask}: mask volume shape {m.shape} does not fit {len(s)} slices of {image}"
                )
            return [m[..., k]]

        cases.append(
            Case(
                f"{case}_s{k:03d}",
                load_image,
                load_mask,
                str(image),
                [str(mask)],
                patient=patient,
                extra={"source": image.name, "axis": 2, "slice_index": k},
            )
        )
    return cases


def _dicom_patient(path: Path) -> str:
    first = next((p for p in sorted(path.iterdir()) if p.is_file()), None) if path.is_dir() else path
    try:
        return f"dicom-{patient_key(pydicom.dcmread(str(first), stop_before_pixels=True))}"
    except Exception:  # unreadable headers fall back to the file name; pixel reading reports the error
        return path.name


def discover(raw_dir: Path, report: ValidationReport, axis: int = 2) -> list[Case]:
    """Pair ``RAW_DIR/images/*`` with ``RAW_DIR/masks/*`` by name and expand volumes into slices."""
    image_dir, mask_dir = raw_dir / "images", raw_dir / "masks"
    if not image_dir.is_dir() or not mask_dir.is_dir():
        raise FileNotFoundError(f"{raw_dir}: expected images/ and masks/ folders")
    masks = {_stem(p): p for p in sorted(mask_dir.iterdir()) if not p.name.startswith(".")}
    used = set()
    cases: list[Case] = []
    for image in sorted(
        (p for p in image_dir.iterdir() if not p.name.startswith(".")), key=lambda p: natural_key(p.name)
    ):
        stem = _stem(image)
        mask = next((masks[stem + s] for s in _MASK_SUFFIXES if stem + s in masks), None)
        if mask is None:
            report.warning("image_without_mask", image, "no mask with the same name in masks/")
            continue
        used.add(_stem(mask))
        if image.is_dir() or (is_dicom(image) and _frame_count(image) > 1):
            cases += _dicom_volume_cases(stem, image, mask, report)
        elif is_nifti(image) and _nifti_ndim(image) == 3:
            cases += _volume_cases(stem, image, mask, axis, report)
        else:
            patient = _dicom_patient(image) if is_dicom(image) else stem
            cases.append(
                Case(stem, image_loader(image), mask_loader(mask), str(image), [str(mask)], patient=patient)
            )
    for stem, mask in masks.items():
        if stem not in used:
            report.warning("mask_without_image", mask, "no image with the same name in images/")
    return cases


def _frame_count(path: Path) -> int:
    try:
        return int(pydicom.dcmread(str(path), stop_before_pixels=True).get("NumberOfFrames", 1) or 1)
    except Exception:  # reading the pixels later reports the problem with the file name
        return 1


FOLDERS = Layout("folders", "Generic images/ + masks/ folders (2D files, NIfTI volumes, DICOM)", discover)
