"""Readers and writers for 2D images, NIfTI and DICOM.

All readers return ``(array, meta)`` with the array in image order (``H×W`` or ``H×W×C``, row =
image row, nothing transposed) so that images and masks stored in different formats stay
aligned. Normalisation to ``[0, 1]`` per modality lives in :mod:`.normalize`.
"""

from __future__ import annotations

from .atomic import TEMP_PREFIX, atomic_write, remove_stale_temporaries
from .dicom import (
    DICOM_SUFFIXES,
    PSEUDONYM_SECRET_ENV,
    PSEUDONYM_SECRET_FILE,
    dicom_affine,
    is_dicom,
    load_pseudonym_secret,
    patient_key,
    pseudonym_secret,
    read_dicom,
    read_dicom_frames,
    read_dicom_series,
)
from .image2d import IMAGE_2D_SUFFIXES, is_image_2d, read_image_2d, write_image_png, write_mask_png
from .mask_writer import (
    OUTPUT_FORMATS,
    OUTPUT_SUFFIXES,
    SaveMask2Dd,
    mask_output_path,
    output_format_for,
    overlay_rgb,
    write_mask_like,
)
from .nifti import (
    NIFTI_SUFFIXES,
    VolumeSlice,
    is_nifti,
    read_nifti_2d,
    slice_affine,
    slice_volume,
    stack_slices,
    write_nifti,
)
from .normalize import (
    DEFAULT_CT_WINDOW,
    DEFAULT_PERCENTILES,
    MODALITIES,
    apply_voi_window,
    binarize_mask,
    normalize_intensity,
    to_channels,
)
from .reader import SUPPORTED_2D_SUFFIXES, read_image

__all__ = [
    "SaveMask2Dd",
    "DEFAULT_CT_WINDOW",
    "DEFAULT_PERCENTILES",
    "DICOM_SUFFIXES",
    "IMAGE_2D_SUFFIXES",
    "MODALITIES",
    "NIFTI_SUFFIXES",
    "SUPPORTED_2D_SUFFIXES",
    "VolumeSlice",
    "apply_voi_window",
    "atomic_write",
    "binarize_mask",
    "dicom_affine",
    "is_dicom",
    "is_image_2d",
    "is_nifti",
    "normalize_intensity",
    "patient_key",
    "read_dicom",
    "read_dicom_frames",
    "read_dicom_series",
    "read_image",
    "read_image_2d",
    "read_nifti_2d",
    "slice_affine",
    "slice_volume",
    "stack_slices",
    "to_channels",
    "write_image_png",
    "write_mask_png",
    "write_mask_like",
    "write_nifti",
    "mask_output_path",
    "overlay_rgb",
    "TEMP_PREFIX",
    "remove_stale_temporaries",
    "OUTPUT_FORMATS",
    "OUTPUT_SUFFIXES",
    "output_format_for",
    "PSEUDONYM_SECRET_ENV",
    "PSEUDONYM_SECRET_FILE",
    "load_pseudonym_secret",
    "pseudonym_secret",
]
