"""DICOM: pydicom's own sample files and a series written here in shuffled file order."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from litenext_monai.io import read_dicom, read_dicom_frames, read_dicom_series, read_image
from tests.dicom_helpers import write_dicom_slice

DATA = Path(pydicom.__file__).parent / "data" / "test_files"


def _sample(name: str) -> Path:
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"pydicom sample {name} is not shipped with this pydicom")
    return path


def test_ct_rescale_gives_hounsfield_units() -> None:
    path = _sample("CT_small.dcm")
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    array, meta = read_dicom(path)
    assert np.allclose(array, expected) and meta["modality"] == "CT"
    assert str(ds.PatientID) not in str(meta)  # no patient identifier in the metadata


def test_compressed_transfer_syntaxes_decode_to_the_same_pixels() -> None:
    reference, _ = read_dicom(_sample("MR_small.dcm"))
    for name in ("MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"):
        array, _ = read_dicom(_sample(name))
        assert np.array_equal(array, reference), name


def test_undecodable_jpeg_is_rejected_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match=r"JPEG-lossy\.dcm: cannot decode pixel data with transfer syntax"):
        read_dicom(_sample("JPEG-lossy.dcm"))


def test_jpeg_baseline_colour_decodes() -> None:
    array, meta = read_dicom(_sample("SC_rgb_jpeg_dcmtk.dcm"))
    assert array.shape == (100, 100, 3) and meta["value_range"] == (0.0, 255.0)


def test_monochrome1_is_inverted() -> None:
    path = _sample(os.path.join("dicomdirtests", "77654033", "CR1", "6154"))
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    stored = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(
        ds.get("RescaleIntercept", 0)
    )
    array, meta = read_dicom(path)
    low, high = meta["value_range"]
    assert np.allclose(array, low + high - stored)
    # Brightest stored value becomes the darkest output value.
    assert np.unravel_index(np.argmax(stored), stored.shape) == np.unravel_index(
        np.argmin(array), array.shape
    )


def test_voi_window_matches_the_standard_formula() -> None:
    path = _sample("MR_small.dcm")
    ds = pydicom.dcmread(path)
    centre, width = float(ds.WindowCenter), float(ds.WindowWidth)
    x = ds.pixel_array.astype(np.float64)
    expected = np.clip((x - (centre - 0.5)) / (width - 1) + 0.5, 0, 1)
    array, meta = read_dicom(path, voi=True)
    assert meta["voi_applied"] and np.allclose(array, expected, atol=1e-6)


def test_multiframe_and_truncated() -> None:
    frames = read_dicom_frames(_sample("rtdose.dcm"))
    ds = pydicom.dcmread(_sample("rtdose.dcm"))
    assert len(frames) == int(ds.NumberOfFrames)
    assert np.array_equal(frames[3][0], ds.pixel_array[3]) and frames[3][1]["frame"] == 3
    with pytest.raises(ValueError, match="multi-frame"):
        read_dicom(_sample("rtdose.dcm"))
    with pytest.raises(ValueError, match="MR_truncated.dcm"):
        read_image(_sample("MR_truncated.dcm"))


def test_series_sorted_by_position_not_file_name(tmp_path: Path) -> None:
    series, rng = generate_uid(), np.random.default_rng(41)
    slices = rng.integers(0, 1000, (5, 8, 10)).astype(np.uint16)
    positions = [12.0, -3.0, 40.0, 7.5, 0.0]  # written in this order, file names 0..4
    for name, (pixels, z) in enumerate(zip(slices, positions, strict=True)):
        write_dicom_slice(
            tmp_path / f"{name}.dcm",
            pixels,
            series_uid=series,
            instance=5 - name,
            position=(0, 0, z),
            patient_id="SECRET-ID",
        )
    (tmp_path / "README.txt").write_text("not dicom")
    volume, meta = read_dicom_series(tmp_path)
    order = np.argsort(positions)
    assert volume.shape == (8, 10, 5)
    for k, source in enumerate(order):
        assert np.array_equal(volume[..., k], slices[source])
    assert meta["positions"] == sorted(positions)
    assert "SECRET-ID" not in str(meta)
