"""Label maps of several classes: PNG/NIfTI values 0..N, a DICOM SEG with one segment per class (dciodvfy, highdicom)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from litenext_monai.io import SaveMask2Dd, write_nifti
from litenext_monai.io.dicom_seg import DEFAULT_SEGMENT, segment_descriptions, write_dicom_seg
from litenext_monai.io.mask_writer import overlay_rgb, write_mask_like
from tests.hospital_helpers import dciodvfy_errors, disk_image, read_seg, write_ct_series

SEGMENTS = [
    {"label": "Left ventricle cavity", "category": ["SCT", "91723000", "Anatomical Structure"],
     "type": ["SCT", "87878005", "Left ventricle"]},
    {"label": "Myocardium", "category": ["SCT", "91723000", "Anatomical Structure"],
     "type": ["SCT", "74281007", "Myocardium"]},
]  # fmt: skip


def _label_map(size: int = 32, shift: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    r2 = (yy - 16 - shift) ** 2 + (xx - 15) ** 2
    labels = np.zeros((size, size), np.uint8)
    labels[r2 <= 100] = 2  # ring (myocardium) ...
    labels[r2 <= 36] = 1  # ... around the cavity
    return labels


def _item(path: Path, mask: np.ndarray, **extra) -> dict:
    image = MetaTensor(torch.zeros(1, *mask.shape), meta={"filename_or_obj": str(path)})
    return {"image": image, "pred": torch.as_tensor(mask[None], dtype=torch.float32), **extra}


def test_png_and_nifti_label_maps_keep_class_values(tmp_path: Path) -> None:
    labels = _label_map()
    png_in = tmp_path / "in" / "img.png"
    png_in.parent.mkdir()
    Image.fromarray(np.full((32, 32), 90, np.uint8)).save(png_in)
    out = write_mask_like(labels, png_in, tmp_path / "out", overlay_dir=tmp_path / "ov", num_classes=2)
    stored = np.asarray(Image.open(out))
    assert stored.dtype == np.uint8 and np.array_equal(stored, labels)
    overlay = np.asarray(Image.open(tmp_path / "ov" / "img_overlay.png"))
    assert overlay[16, 15, 0] > overlay[16, 15, 2]  # class 1 tinted red
    assert overlay[16, 24, 2] > overlay[16, 24, 0]  # class 2 tinted blue

    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    nii_in = write_nifti(np.zeros((32, 32), np.float32), affine, tmp_path / "in" / "img.nii.gz")
    out = write_mask_like(labels, nii_in, tmp_path / "out", num_classes=2)
    image = nib.load(str(out))
    assert image.get_data_dtype() == np.uint8
    assert np.array_equal(np.asanyarray(image.dataobj), labels) and np.allclose(image.affine, affine)
    # binary path unchanged: 0/255
    out = write_mask_like(labels, png_in, tmp_path / "bin", num_classes=1)
    assert set(np.unique(np.asarray(Image.open(out))).tolist()) == {0, 255}


def test_label_map_values_out_of_range_name_the_input(tmp_path: Path) -> None:
    png_in = tmp_path / "scan7.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(png_in)
    with pytest.raises(ValueError, match=r"scan7\.png.*\[3\].*0\.\.2"):
        write_mask_like(np.full((4, 4), 3), png_in, tmp_path / "out", num_classes=2)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_multi_segment_seg_is_valid_and_reads_back_as_the_label_map(tmp_path: Path) -> None:
    files = write_ct_series(tmp_path / "ct", [disk_image() for _ in range(3)])
    maps = np.stack([_label_map(shift=k) for k in range(3)])
    maps[2] = 0  # an empty slice
    out = write_dicom_seg(files, maps, tmp_path / "seg.dcm", segments=SEGMENTS, algorithm_version="1.0")
    assert dciodvfy_errors(out) == []
    seg = read_seg(out)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Left ventricle cavity", "Myocardium"]
    assert seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "74281007"
    for k, path in enumerate(files):
        uid = pydicom.dcmread(path).SOPInstanceUID
        read = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[uid],
            segment_numbers=[1, 2],
            combine_segments=True,
            ignore_spatial_locations=True,
        )[0]
        assert np.array_equal(read, maps[k]), k


def test_writer_collects_label_map_slices_into_a_multi_segment_seg(tmp_path: Path) -> None:
    files = write_ct_series(tmp_path / "ct", [disk_image() for _ in range(2)])
    maps = [_label_map(), _label_map(shift=3)]
    writer = SaveMask2Dd(
        keys="pred", output_dir=tmp_path / "out", num_classes=2, seg_metadata={"segments": SEGMENTS}
    )
    common = {"output_format": "dicom-seg", "output_name": "lv_seg.dcm", "series": "s", "series_size": 2}
    writer(_item(files[1], maps[1], series_index=1, **common))
    done = writer(_item(files[0], maps[0], series_index=0, **common))
    assert done["pred_path"].endswith("lv_seg.dcm")
    assert dciodvfy_errors(done["pred_path"]) == []
    seg = read_seg(done["pred_path"])
    for path, expected in zip(files, maps):
        read = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[pydicom.dcmread(path).SOPInstanceUID],
            segment_numbers=[1, 2],
            combine_segments=True,
            ignore_spatial_locations=True,
        )[0]
        assert np.array_equal(read, expected)
    # default descriptions when the model card has none
    default = SaveMask2Dd(keys="pred", output_dir=tmp_path / "o2", num_classes=3)
    assert [s["label"] for s in default.seg_metadata["segments"]] == ["Class 1", "Class 2", "Class 3"]


def test_segment_configuration_errors(tmp_path: Path) -> None:
    files = write_ct_series(tmp_path / "ct", [disk_image()])
    with pytest.raises(ValueError, match=r"values \[0, 1, 2\] outside 0\.\.1"):
        write_dicom_seg(files, _label_map()[None], tmp_path / "x.dcm", segments=SEGMENTS[:1])
    with pytest.raises(ValueError, match="not both"):
        write_dicom_seg(
            files, _label_map()[None], tmp_path / "x.dcm", segments=SEGMENTS, segment=DEFAULT_SEGMENT
        )
    with pytest.raises(ValueError, match="differ"):
        segment_descriptions([{"label": "A"}, {"label": "A"}])
    with pytest.raises(ValueError, match="unknown keys"):
        segment_descriptions([{"name": "A"}])
    with pytest.raises(ValueError, match="describes 2 classes, not 3"):
        SaveMask2Dd(keys="pred", output_dir=tmp_path, num_classes=3, seg_metadata={"segments": SEGMENTS})
    with pytest.raises(ValueError, match="needs num_classes"):
        SaveMask2Dd(keys="pred", output_dir=tmp_path, seg_metadata={"segments": SEGMENTS})
    assert not (tmp_path / "x.dcm").exists()


def test_overlay_of_binary_prediction_is_unchanged() -> None:
    image = np.full((1, 4, 4), 0.5, np.float32)
    pred = np.zeros((4, 4))
    pred[1, 1] = 1
    rgb = overlay_rgb(image, pred)
    assert tuple(rgb[1, 1]) == (int(0.55 * 0.5 * 255 + 0.45 * 255 + 0.5), int(0.55 * 0.5 * 255 + 0.5),
                               int(0.55 * 0.5 * 255 + 0.5))  # fmt: skip
    assert np.array_equal(overlay_rgb(image, pred * 0.4), rgb)  # any positive value is class 1 (red)
