"""Synthetic DICOM series with no real patient: the node's warm-up and the node benchmark use them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["synthetic_mr_series", "write_warm_up_series"]


def synthetic_mr_series(
    images: Sequence, patient_name: str = "Synthetic^Series", patient_id: str = "SYNTHETIC"
) -> list:
    """An axial MR series (uint16 ``H×W`` slices, 1 mm apart) as pydicom datasets, with no real patient.

    The node's warm-up and ``scripts/benchmark_dicom_node.py`` build their series with it.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for index, pixels in enumerate(images):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20000101", "000000", "1", ""
        ds.ReferringPhysicianName, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "", "MR", 1, index + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, float(index)], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels.astype("uint16").tobytes()
        datasets.append(ds)
    return datasets


def write_warm_up_series(folder: Path, size: int = 32) -> list[Path]:
    """Two synthetic MR slices (no patient data) that any image segmenter should accept."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.arange(size * size, dtype=np.uint16).reshape(size, size)
    paths = []
    for index, ds in enumerate(synthetic_mr_series([ramp, ramp], "Warm^Up", "WARMUP")):
        paths.append(folder / f"{index}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths
