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


def test_oblique_series_order_and_affine_match_a_hand_computation(tmp_path: Path) -> None:
    # Rows run along r, columns down c, both tilted: r = (cos 30°, sin 30°, 0), c = (0, 0, -1)
    # (LPS). The slice normal r × c = (-sin 30°, cos 30°, 0) = (-0.5, 0.866..., 0).
    half, root3_2 = 0.5, np.sqrt(3.0) / 2.0
    r, c, normal = np.array([root3_2, half, 0.0]), np.array([0.0, 0.0, -1.0]), np.array([-half, root3_2, 0.0])
    p0, step = np.array([10.0, -20.0, 30.0]), 3.0
    series = generate_uid()
    order = [2, 0, 3, 1]  # file k holds slice order[k]
    for name, k in enumerate(order):
        write_dicom_slice(
            tmp_path / f"{name}.dcm",
            np.full((4, 6), 100 * k, dtype=np.uint16),
            series_uid=series,
            instance=10 - name,
            position=tuple(p0 + k * step * normal),
            orientation=(*r, *c),
            spacing=(0.5, 0.8),  # between rows, between columns
        )
    volume, meta = read_dicom_series(tmp_path)
    assert [int(volume[0, 0, k]) for k in range(4)] == [0, 100, 200, 300]
    # positions: the projection of p0 + k*3*n onto n = n·p0 + 3k, with n·p0 = -5 - 10·√3
    first = -0.5 * 10.0 + root3_2 * -20.0
    np.testing.assert_allclose(meta["positions"], [first + 3.0 * k for k in range(4)], atol=1e-9)
    affine = meta["affine"]
    # Voxel (row 2, column 3, slice 1) in LPS: p0 + 2·0.5·c + 3·0.8·r + 1·3·n, written out by hand:
    # x = 10 + 2.4·cos30 - 3·0.5 ; y = -20 + 2.4·0.5 + 3·cos30 ; z = 30 - 1.0
    lps = np.array([10.0 + 2.4 * root3_2 - 1.5, -20.0 + 1.2 + 3.0 * root3_2, 29.0])
    ras = np.array([-lps[0], -lps[1], lps[2]])
    np.testing.assert_allclose(affine @ np.array([2.0, 3.0, 1.0, 1.0]), [*ras, 1.0], atol=1e-9)
    # the origin is the first slice's top-left pixel centre, in RAS
    np.testing.assert_allclose(affine[:3, 3], [-10.0, 20.0, 30.0], atol=1e-9)
    # column j of the 3×3 part: one step along rows / columns / slices, in RAS
    np.testing.assert_allclose(affine[:3, 0], [0.0, 0.0, -0.5], atol=1e-12)
    np.testing.assert_allclose(affine[:3, 1], [-0.8 * root3_2, -0.4, 0.0], atol=1e-12)
    np.testing.assert_allclose(affine[:3, 2], [1.5, -3.0 * root3_2, 0.0], atol=1e-12)
