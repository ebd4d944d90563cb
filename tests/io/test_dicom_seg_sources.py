"""DICOM SEG from real-world sources: missing Type 2 attributes, invalid identity, duplicate files.

Oracles: dciodvfy (0 Error lines), the source files' own values read back with pydicom, a SHA-256
computed here with hashlib, and the SOP Instance UIDs written by the test.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from litenext_monai.inference.inputs import list_inference_items
from litenext_monai.io.dicom_seg import (
    IDENTITY_KEYWORDS,
    TYPE2_KEYWORDS,
    deduplicate_instances,
    parse_code,
    write_dicom_seg,
)
from tests.hospital_helpers import (
    dciodvfy_errors,
    disk_image,
    tiny_checkpoint,
    write_ct_series,
    write_projection,
)

MISSING = ("PatientSex", "PatientBirthDate", "StudyID", "AccessionNumber", "ReferringPhysicianName")


def _strip(paths: list[Path], keywords=MISSING, empty: bool = False) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword in keywords:
            if empty:
                setattr(ds, keyword, "")
            elif keyword in ds:
                delattr(ds, keyword)
        ds.save_as(path, enforce_file_format=True)


def _masks(n: int, size: int = 32) -> np.ndarray:
    masks = np.zeros((n, size, size), dtype=np.uint8)
    masks[:, 8:20, 10:24] = 1
    return masks


@pytest.mark.parametrize("empty", [False, True], ids=["absent", "empty"])
@pytest.mark.parametrize("kind", ["ct", "dx"])
def test_missing_type2_attributes_give_empty_values_and_a_valid_seg(tmp_path, kind, empty):
    if kind == "ct":
        files = write_ct_series(tmp_path / "src", [disk_image(32) for _ in range(2)])
    else:
        files = [write_projection(tmp_path / "src" / "dx.dcm", disk_image(32))]
    _strip(files, empty=empty)
    source = pydicom.dcmread(files[0])
    out = write_dicom_seg(files, _masks(len(files)), tmp_path / "seg.dcm")
    assert dciodvfy_errors(out) == []
    seg = pydicom.dcmread(out)
    for keyword in MISSING:
        assert keyword in seg and seg[keyword].value in ("", None), keyword
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "StudyTime"):
        assert str(seg.get(keyword)) == str(source.get(keyword)), keyword


def test_invalid_identity_is_copied_verbatim_and_the_warning_does_not_quote_it(tmp_path):
    files = write_ct_series(tmp_path / "src", [disk_image(32)])
    ds = pydicom.dcmread(files[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the values this test writes on purpose
        ds.AccessionNumber = "ACC-2024-000000000001"  # 21 characters: SH allows 16
        ds.PatientBirthDate = "1970-01-01"  # not DA
        ds.PatientID = "ID\\WITH-BACKSLASH-AND-A-VERY-LONG-TAIL-" + "9" * 40
    ds.save_as(files[0], enforce_file_format=True)
    with pytest.warns(UserWarning) as record:
        out = write_dicom_seg(files, _masks(1), tmp_path / "seg.dcm")
    messages = " ".join(str(w.message) for w in record)
    assert "AccessionNumber" in messages and "PatientBirthDate" in messages and "copied verbatim" in messages
    for secret in ("ACC-2024", "1970-01-01", "WITH-BACKSLASH"):
        assert secret not in messages
    seg = pydicom.dcmread(out)
    source = pydicom.dcmread(files[0])
    for keyword in IDENTITY_KEYWORDS:
        if keyword in source:
            assert seg[keyword].value == source[keyword].value, keyword
    # Only the source's own VR violations remain (dciodvfy names the three attributes).
    errors = [e for e in dciodvfy_errors(out) if "invalid data values" not in e]
    assert errors and all(
        any(name in e for name in ("Accession Number", "Patient's Birth Date", "Patient ID", "<PatientID>"))
        for e in errors
    )


def test_type2_and_identity_lists_cover_the_brief():
    assert set(MISSING) <= set(TYPE2_KEYWORDS)
    assert {"PatientName", "PatientID", "AccessionNumber", "StudyID"} <= set(IDENTITY_KEYWORDS)


def test_parse_code():
    assert parse_code("SCT:10200004:Liver") == ["SCT", "10200004", "Liver"]
    assert parse_code("99LOCAL:X1:Tumour: core") == ["99LOCAL", "X1", "Tumour: core"]
    for bad in ("SCT:10200004", "::x", "Liver"):
        with pytest.raises(ValueError, match="SCHEME:VALUE:MEANING"):
            parse_code(bad)


def _truncated_copy(path: Path, dest: Path, keep: int | None = None) -> Path:
    data = path.read_bytes()
    dest.write_bytes(data[: keep if keep is not None else len(data) - 300])
    return dest


def test_deduplicate_keeps_the_readable_copy(tmp_path):
    files = write_ct_series(tmp_path / "s", [disk_image(32) for _ in range(3)])
    bad = _truncated_copy(files[1], tmp_path / "s" / "a_copy.dcm")  # sorts first, truncated pixels
    good_twin = tmp_path / "s" / "z_copy.dcm"
    good_twin.write_bytes(files[2].read_bytes())
    with pytest.warns(UserWarning, match="duplicate SOP Instance UID"):
        kept, dropped = deduplicate_instances([bad, *files, good_twin])
    assert kept == files
    assert dropped == [(bad, files[1]), (good_twin, files[2])]


@pytest.mark.parametrize("cut", ["pixels", "header"])
def test_truncated_duplicate_does_not_block_folder_inference(tmp_path, cut):
    files = write_ct_series(tmp_path / "in" / "series", [disk_image(32) for _ in range(3)])
    size = len(files[1].read_bytes())
    keep = size - 300 if cut == "pixels" else _offset_after_sop_uid(files[1])
    _truncated_copy(files[1], tmp_path / "in" / "series" / "copy_of_1.dcm", keep)
    with pytest.warns(UserWarning, match="duplicate SOP Instance UID"):
        items = list_inference_items(tmp_path / "in", output_format="dicom-seg")
    assert sorted(Path(i["image"]) for i in items) == sorted(files)
    assert {i["series_size"] for i in items} == {3}


def _offset_after_sop_uid(path: Path) -> int:
    """A cut inside the header, after SOP Instance UID (0008,0018) but before the image attributes."""
    data = path.read_bytes()
    uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID.encode()
    start = data.index(uid, data.index(uid) + len(uid))  # the data set's copy, after the file meta's
    return start + len(uid) + 40


def test_segment_dicom_to_seg_with_model_card_overrides_and_a_duplicate(tmp_path):
    from litenext_monai.dicom_node import checkpoint_segmenter

    ckpt = tiny_checkpoint(tmp_path / "model")
    files = write_ct_series(tmp_path / "s", [disk_image(32) for _ in range(3)])
    _strip(files)
    dup = _truncated_copy(files[0], tmp_path / "s" / "dup.dcm")
    segment = checkpoint_segmenter(
        str(ckpt), segment_label="Liver", segment_code="SCT:10200004:Liver", series_description="RUO test"
    )
    with pytest.warns(UserWarning, match="duplicate SOP Instance UID"):
        out = segment([dup, *files], tmp_path / "seg.dcm")
    assert dciodvfy_errors(out) == []
    seg = pydicom.dcmread(out)
    referenced = {
        i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == {pydicom.dcmread(f).SOPInstanceUID for f in files}
    assert seg.SeriesDescription == "RUO test"
    item = seg.SegmentSequence[0]
    assert item.SegmentLabel == "Liver"
    code = item.SegmentedPropertyTypeCodeSequence[0]
    assert (code.CodingSchemeDesignator, code.CodeValue, code.CodeMeaning) == ("SCT", "10200004", "Liver")
    category = item.SegmentedPropertyCategoryCodeSequence[0]
    assert category.CodeValue == "49755003"  # from the model card (model.json)
    algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "LiteNeXt" and algorithm.AlgorithmVersion == "0.1.0"
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() in str(algorithm.AlgorithmParameters)
    # defaults: the model card's label and the node's series description
    default = checkpoint_segmenter(str(ckpt))(files, tmp_path / "seg2.dcm")
    seg2 = pydicom.dcmread(default)
    assert seg2.SeriesDescription == "research use only" and seg2.SegmentSequence[0].SegmentLabel == "Lesion"
