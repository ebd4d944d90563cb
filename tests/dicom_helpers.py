"""Write single-frame DICOM slices for tests, so fixtures need no DICOM files in the repository.

The files are uncompressed (explicit VR little endian) MR or CT images, written with pydicom and
with the file meta information the standard requires, so every reader sees a conforming file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

__all__ = ["write_dicom_slice"]

_STORAGE = {"MR": MRImageStorage, "CT": CTImageStorage}
# PixelRepresentation: 0 for unsigned, 1 for two's-complement stored values.
_REPRESENTATION = {np.dtype(np.uint16): 0, np.dtype(np.int16): 1}


def write_dicom_slice(
    path: Path,
    pixels: np.ndarray,
    *,
    series_uid: str,
    position: Sequence[float],
    instance: int | None = None,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    spacing: Sequence[float] = (1.0, 1.0),
    modality: str = "MR",
    patient_id: str = "ANON",
    patient_name: str | None = None,
    rescale: tuple[float, float] | None = None,
    bits_stored: int = 16,
) -> None:
    """Write one monochrome slice as a DICOM file, creating the parent folder.

    Args:
        path: Output file.
        pixels: Stored values, ``Rows×Columns``, ``uint16`` or ``int16`` (sets PixelRepresentation).
        series_uid: SeriesInstanceUID shared by the slices of one series.
        position: ImagePositionPatient, mm (LPS), of the first transmitted pixel.
        instance: InstanceNumber; left out of the file when ``None``.
        orientation: ImageOrientationPatient, row then column direction cosines.
        spacing: PixelSpacing, mm: row spacing then column spacing.
        modality: ``"MR"`` or ``"CT"``; picks the storage SOP class.
        patient_id: PatientID.
        patient_name: PatientName; left out of the file when ``None``.
        rescale: ``(RescaleSlope, RescaleIntercept)``; left out of the file when ``None``.
        bits_stored: BitsStored (HighBit is one less) of the 16 allocated bits.

    Raises:
        ValueError: If ``pixels`` is not 2D ``uint16``/``int16`` or ``modality`` is unknown.
    """
    if pixels.ndim != 2 or pixels.dtype not in _REPRESENTATION:
        raise ValueError(
            f"pixels must be 2D uint16 or int16, got shape {pixels.shape} and dtype {pixels.dtype}"
        )
    if modality not in _STORAGE:
        raise ValueError(f"modality must be one of {sorted(_STORAGE)}, got {modality!r}")
    sop_class = _STORAGE[modality]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.Modality, ds.PatientID = series_uid, modality, patient_id
    if instance is not None:
        ds.InstanceNumber = instance
    if patient_name is not None:
        ds.PatientName = patient_name
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = _REPRESENTATION[pixels.dtype]
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    ds.PixelSpacing = list(spacing)
    ds.ImageOrientationPatient = list(orientation)
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
