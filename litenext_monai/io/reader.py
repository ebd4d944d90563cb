"""One entry point that reads any supported 2D file: raster, NIfTI or DICOM."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .dicom import is_dicom, read_dicom
from .image2d import is_image_2d, read_image_2d
from .nifti import is_nifti, read_nifti_2d

__all__ = ["SUPPORTED_2D_SUFFIXES", "read_image"]

SUPPORTED_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".nii", ".nii.gz", ".dcm")


def read_image(
    path: str | os.PathLike, as_label: bool = False, dicom_voi: bool = False
) -> tuple[np.ndarray, dict]:
    """Read a 2D image or mask in image order (``H×W`` or ``H×W×C``, row = image row).

    The format is chosen from the suffix (DICOM also by its ``DICM`` marker). See
    :func:`~litenext_monai.io.image2d.read_image_2d`, :func:`~litenext_monai.io.nifti.read_nifti_2d`
    and :func:`~litenext_monai.io.dicom.read_dicom` for the ``meta`` keys.

    Args:
        path: the file.
        as_label: keep palette indices of indexed raster masks.
        dicom_voi: apply the DICOM file's own VOI LUT/window.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unsupported format, or an unreadable/truncated file (message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if is_nifti(path):
        return read_nifti_2d(path)
    if is_image_2d(path):
        return read_image_2d(path, as_label=as_label)
    if is_dicom(path):
        return read_dicom(path, voi=dicom_voi)
    raise ValueError(f"{path}: unsupported file type; expected one of {SUPPORTED_2D_SUFFIXES} or DICOM")
