"""DICOM SEG writing: dciodvfy-clean, read back by highdicom, references and identity of the sources kept."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from litenext_monai.io.dicom_seg import (
    DEFAULT_SEGMENT,
    coded_concept,
    position_order,
    read_dicom_headers,
    write_dicom_seg,
)
from tests.hospital_helpers import (
    dciodvfy_errors,
    disk_image,
    read_seg,
    source_bytes,
    write_ct_series,
    write_projection,
)


def _masks(n: int, size: int = 32) -> np.ndarray:
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for k in range(n):
        masks[k, 2 + k : 10 + 2 * k, 3 : 5 + 3 * k] = 1  # a different, asymmetric shape per frame
    return masks


def test_series_seg_is_valid_and_keeps_the_sources_identity(tmp_path: Path) -> None:
    # file names deliberately out of slice order: the SEG must follow the given (slice) order
    files = write_ct_series(
        tmp_path / "ct", [disk_image() for _ in range(3)], names=["z.dcm", "a.dcm", "m.dcm"]
    )
    masks = _masks(3)
    out = write_dicom_seg(
        files, masks, tmp_path / "out" / "seg.dcm", checkpoint_sha256="ab" * 32, algorithm_version="9.9"
    )
    assert dciodvfy_errors(out) == []
    seg = read_seg(out)
    sources = [pydicom.dcmread(f) for f in files]
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "FrameOfReferenceUID"):
        assert str(seg.get(keyword)) == str(sources[0].get(keyword)), keyword
    assert seg.SeriesInstanceUID != sources[0].SeriesInstanceUID
    referenced = [
        i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    ]
    assert sorted(referenced) == sorted(s.SOPInstanceUID for s in sources)
    # frame k of the SEG lies on source k: compare through the per-frame source references
    for k, source in enumerate(sources):
        frame = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[source.SOPInstanceUID],
            segment_numbers=[1],
            ignore_spatial_locations=True,
        )[0, ..., 0]
        assert np.array_equal(frame, masks[k]), k
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == DEFAULT_SEGMENT["label"] and segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == DEFAULT_SEGMENT["type"][1]
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "LiteNeXt" and algorithm.AlgorithmVersion == "9.9"
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    assert "ab" * 32 in str(algorithm.AlgorithmParameters)


def test_empty_prediction_gives_a_valid_seg(tmp_path: Path) -> None:
    files = write_ct_series(tmp_path / "ct", [disk_image() for _ in range(2)])
    out = write_dicom_seg(files, np.zeros((2, 32, 32), np.uint8), tmp_path / "empty.dcm")
    assert dciodvfy_errors(out) == []
    seg = read_seg(out)
    assert seg.NumberOfFrames == 2 and not np.asarray(seg.pixel_array).any()


def test_projection_image_gets_pixel_measures_and_patient_orientation(tmp_path: Path) -> None:
    source = write_projection(tmp_path / "dx.dcm", disk_image())
    out = write_dicom_seg([source], _masks(1), tmp_path / "dx_seg.dcm")
    assert dciodvfy_errors(out) == []
    seg = read_seg(out)
    assert list(seg.PatientOrientation) == ["L", "F"]
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in measures.PixelSpacing] == [0.2, 0.2] and float(measures.SliceThickness) == 1.0
    # no spacing anywhere in the source: 1 mm nominal, still valid
    bare = write_projection(tmp_path / "bare.dcm", disk_image(), spacing=False)
    out = write_dicom_seg([bare], _masks(1), tmp_path / "bare_seg.dcm")
    assert dciodvfy_errors(out) == []


def test_non_conformant_source_gives_a_valid_seg_and_a_warning_naming_the_file(tmp_path: Path) -> None:
    files = write_ct_series(tmp_path / "ct", [disk_image()], patient_sex="female")
    before = source_bytes(files)
    with pytest.warns(UserWarning, match=r"slice_0\.dcm: non-conformant source attributes: PatientSex"):
        out = write_dicom_seg(files, _masks(1), tmp_path / "seg.dcm")
    assert dciodvfy_errors(out) == []
    assert read_seg(out).PatientSex == "F"
    assert source_bytes(files) == before  # inputs never modified


def test_malformed_referenced_uid_is_a_clear_error(tmp_path: Path) -> None:
    files = write_ct_series(tmp_path / "ct", [disk_image()])
    ds = pydicom.dcmread(files[0])
    ds.StudyInstanceUID = "../../etc/passwd"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(files[0])
    with pytest.raises(ValueError, match=r"slice_0\.dcm: malformed StudyInstanceUID"):
        write_dicom_seg(files, _masks(1), tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()


def test_mismatched_masks_and_mixed_series_are_refused(tmp_path: Path) -> None:
    a = write_ct_series(tmp_path / "a", [disk_image()])
    b = write_ct_series(tmp_path / "b", [disk_image()])
    with pytest.raises(ValueError, match="2 series"):
        write_dicom_seg(a + b, _masks(2), tmp_path / "seg.dcm")
    with pytest.raises(ValueError, match=r"do not fit 1 source frame\(s\) of 32x32"):
        write_dicom_seg(a, _masks(2), tmp_path / "seg.dcm")


def test_position_order_sorts_along_the_normal_then_instance_number(tmp_path: Path) -> None:
    files = write_ct_series(tmp_path / "ct", [disk_image() for _ in range(4)], names=["d", "c", "b", "a"])
    headers = read_dicom_headers(files[::-1])  # given a, b, c, d = slices 3, 2, 1, 0
    assert position_order(headers) == [3, 2, 1, 0]
    for h in headers:
        del h.ImagePositionPatient
    assert position_order(headers) == [3, 2, 1, 0]  # by InstanceNumber


def test_codes_from_triples_and_keywords() -> None:
    assert coded_concept(["SCT", "52988006", "Lesion"]).value == "52988006"
    assert coded_concept("Lesion").value == "52988006"
    with pytest.raises(ValueError, match="scheme, value, meaning"):
        coded_concept(["SCT", "1"])
