"""Folder inference inputs: series grouping, collision-free names, every failure recorded."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from litenext_monai.inference import BatchFailedError, FailureReport
from litenext_monai.inference.inputs import list_inference_items
from litenext_monai.io import TEMP_PREFIX, SaveMask2Dd
from tests.hospital_helpers import dciodvfy_errors, disk_image, read_seg, write_ct_series


def _png(path: Path, value: int = 50) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 16), value, np.uint8)).save(path)
    return path


def test_same_stem_inputs_get_distinct_outputs(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    Image.fromarray(np.full((12, 16), 9, np.uint8)).save(tmp_path / "a.jpg")
    _png(tmp_path / "b.png")
    _png(tmp_path / "sub" / "b.png")  # same name one level down
    items = list_inference_items(tmp_path)
    names = {Path(i["image"]).relative_to(tmp_path).as_posix(): i["output_name"] for i in items}
    assert names == {
        "a.jpg": "a_jpg_mask.png",
        "a.png": "a_png_mask.png",
        "b.png": "b_png_mask.png",
        "sub/b.png": "b_png_2_mask.png",
    }
    assert len(set(names.values())) == len(names)


def test_series_at_any_depth_become_one_seg_item_group_in_position_order(tmp_path: Path) -> None:
    series = write_ct_series(
        tmp_path / "p1" / "study" / "ct", [disk_image() for _ in range(3)], names=["3", "1", "2"]
    )
    (single,) = write_ct_series(tmp_path, [disk_image()], names=["single.dcm"])
    items = list_inference_items(tmp_path)
    seg = [i for i in items if i["series"]]
    assert [i["image"] for i in seg] == [str(p) for p in series]  # slice order, not name order
    assert {i["output_name"] for i in seg} == {"p1_study_ct_seg.dcm"}
    assert [int(i["series_index"]) for i in seg] == [0, 1, 2] and {i["series_size"] for i in seg} == {3}
    (alone,) = [i for i in items if not i["series"]]
    assert alone["image"] == str(single) and alone["output_name"] == "single_seg.dcm"
    png = list_inference_items(tmp_path, output_format="png")  # every slice on its own
    assert sorted(i["output_name"] for i in png) == [
        "1_mask.png",
        "2_mask.png",
        "3_mask.png",
        "single_mask.png",
    ]


def test_every_rejected_input_has_a_reason(tmp_path: Path) -> None:
    _png(tmp_path / "ok.png")
    (tmp_path / "notes.txt").write_text("x")
    np.save(tmp_path / "array.npy", np.zeros(3))
    series = write_ct_series(tmp_path / "s", [disk_image(), disk_image()])
    series[1].write_bytes(series[1].read_bytes()[:-300])  # one slice's pixels cut short: the series fails
    report = FailureReport(tmp_path / "out")
    items = list_inference_items(tmp_path, failures=report)
    assert [Path(i["image"]).name for i in items] == ["ok.png"]
    reasons = {Path(p).name: r for p, r in report.failures}
    assert set(reasons) == {"notes.txt", "array.npy", "slice_0.dcm", "slice_1.dcm"}
    assert "unsupported file type '.txt'" in reasons["notes.txt"]
    assert (
        "truncated" in reasons["slice_1.dcm"]
        and "slice_1.dcm of the same DICOM series" in reasons["slice_0.dcm"]
    )
    assert report.total == 5
    report.write()
    rows = list(csv.reader((tmp_path / "out" / "failures.csv").open()))
    assert rows[0] == ["input", "reason"] and len(rows) == 5
    with pytest.raises(BatchFailedError, match=r"4 of 5 inputs got no output") as info:
        report.raise_if_failed()
    assert info.value.code  # a non-zero exit status for the command
    rejected = FailureReport(tmp_path / "out2")
    assert list_inference_items([tmp_path / "ok.png"], failures=rejected, output_format="dicom-seg") == []
    assert "dicom-seg output needs a DICOM input" in rejected.failures[0][1]


def _item(path: Path, mask: np.ndarray, **extra) -> dict:
    image = MetaTensor(torch.zeros(1, *mask.shape), meta={"filename_or_obj": str(path)})
    return {"image": image, "pred": torch.as_tensor(mask[None], dtype=torch.float32), **extra}


def test_writer_collects_a_series_into_one_seg_and_reports_incomplete_ones(tmp_path: Path) -> None:
    files = write_ct_series(tmp_path / "ct", [disk_image() for _ in range(2)])
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{TEMP_PREFIX}old_mask.png").write_bytes(b"half")  # what a killed run leaves
    report = FailureReport(out)
    writer = SaveMask2Dd(keys="pred", output_dir=out, failures=report)
    assert not list(out.glob(f"{TEMP_PREFIX}*"))
    masks = [np.zeros((32, 32), np.uint8), np.ones((32, 32), np.uint8)]
    common = {"output_format": "dicom-seg", "output_name": "ct_seg.dcm", "series": "s1", "series_size": 2}
    first = writer(_item(files[1], masks[1], series_index=1, **common))
    assert "pred_path" not in first and not (out / "ct_seg.dcm").exists()  # waits for the whole series
    second = writer(_item(files[0], masks[0], series_index=0, **common))
    assert second["pred_path"] == str(out / "ct_seg.dcm")
    assert dciodvfy_errors(out / "ct_seg.dcm") == []
    seg = read_seg(out / "ct_seg.dcm")
    for path, mask in zip(files, masks):
        uid = pydicom.dcmread(path).SOPInstanceUID
        frame = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[uid], segment_numbers=[1], ignore_spatial_locations=True
        )[0, ..., 0]
        assert np.array_equal(frame, mask)
    writer(
        _item(
            files[0], masks[0], series_index=0, **{**common, "series": "s2", "output_name": "other_seg.dcm"}
        )
    )
    report.finish()
    assert [(Path(p).name, "incomplete" in r) for p, r in report.failures] == [("slice_0.dcm", True)]
    assert not (out / "other_seg.dcm").exists()
