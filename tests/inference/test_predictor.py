"""segment_dicom_to_seg: one series in, one SEG out, equal to what the bundle's transforms compute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import Compose, Invertd

from litenext_monai.inference import load_network_from_checkpoint, segment_dicom_to_seg
from litenext_monai.transforms import load_pipeline
from tests.hospital_helpers import (
    dciodvfy_errors,
    disk_image,
    read_seg,
    source_bytes,
    tiny_checkpoint,
    write_ct_series,
)

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "litenext_seg"


def _bundle_masks(network, settings, files) -> list[np.ndarray]:
    """The oracle: the bundle's own pipelines (transforms/litenext_2d.json), one file at a time."""
    values = {k: settings[k] for k in ("modality", "in_channels", "image_size", "threshold", "num_classes")}
    pre = Compose(load_pipeline("load_image", BUNDLE, values) + load_pipeline("resize_image", BUNDLE, values))
    post = Compose(
        [Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)]
        + load_pipeline("logits_to_mask", BUNDLE, values)
    )
    masks = []
    for f in files:
        d = pre({"image": str(f)})
        with torch.no_grad():
            d["pred"] = network(d["image"][None])[0]
        masks.append(np.asarray(post(d)["pred"][0], dtype=np.uint8))
    return masks


def test_series_seg_equals_the_bundle_pipeline_slice_by_slice(tmp_path: Path) -> None:
    ckpt = tiny_checkpoint(tmp_path / "model", image_size=(32, 32))
    # 40x40 sources: the prediction is resized to 32x32 and back, as in the bundle
    images = [disk_image(40, radius=r, centre=(14 + 3 * r // 4, 20)) for r in (5, 9, 13)]
    files = write_ct_series(tmp_path / "series", images, names=["b.dcm", "c.dcm", "a.dcm"])
    before = source_bytes(files)
    out = segment_dicom_to_seg(list(reversed(files)), ckpt, tmp_path / "out" / "series_seg.dcm")
    assert dciodvfy_errors(out) == []
    network, settings = load_network_from_checkpoint(ckpt)
    expected = _bundle_masks(network, settings, files)
    assert any(m.any() for m in expected) and not all(m.all() for m in expected)  # a non-trivial oracle
    seg = read_seg(out)
    for source, mask in zip(files, expected):
        uid = pydicom.dcmread(source).SOPInstanceUID
        frame = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[uid], segment_numbers=[1], ignore_spatial_locations=True
        )[0, ..., 0]
        assert np.array_equal(frame, mask), source.name
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "Lesion"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert settings["checkpoint_sha256"] in str(algorithm.AlgorithmParameters)
    assert source_bytes(files) == before


def test_preloaded_network_is_used_and_errors_name_the_file(tmp_path: Path) -> None:
    ckpt = tiny_checkpoint(tmp_path / "model")
    network, settings = load_network_from_checkpoint(ckpt)
    files = write_ct_series(tmp_path / "s", [disk_image()])
    out = segment_dicom_to_seg(
        files, "unused-when-settings-given", tmp_path / "seg.dcm", network=network, settings=settings
    )
    assert dciodvfy_errors(out) == []
    other = write_ct_series(tmp_path / "t", [disk_image()])
    with pytest.raises(ValueError, match="several series"):
        segment_dicom_to_seg(files + other, ckpt, tmp_path / "x.dcm", network=network, settings=settings)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(files[0].read_bytes()[:300])
    with pytest.raises(ValueError, match=r"broken\.dcm"):
        segment_dicom_to_seg([broken], ckpt, tmp_path / "y.dcm", network=network, settings=settings)
    assert not (tmp_path / "x.dcm").exists() and not (tmp_path / "y.dcm").exists()


def test_images_at_and_off_the_network_size_equal_the_bundle_pipeline(tmp_path: Path) -> None:
    from PIL import Image

    from litenext_monai.inference import Predictor

    ckpt = tiny_checkpoint(tmp_path / "model", image_size=(32, 32))
    network, settings = load_network_from_checkpoint(ckpt)
    settings = {**settings, "modality": "natural"}
    files = []
    # 32x32 is the network size (no resize round trip), 40x24 is resized there and back.
    for name, size, radius in (("a.png", 32, 9), ("b.png", 40, 13), ("c.png", 32, 5)):
        image = (disk_image(size, radius=radius) > 0).astype(np.uint8) * 200 + 20
        if name == "b.png":
            image = image[:, 8:32]
        Image.fromarray(image).save(tmp_path / name)
        files.append(tmp_path / name)
    expected = _bundle_masks(network, settings, files)
    assert len({m.shape for m in expected}) == 2 and all(0 < m.sum() < m.size for m in expected)
    predictor = Predictor(network, settings)
    for f, mask in zip(files, expected):
        (actual,) = predictor.predict(f)
        np.testing.assert_array_equal(actual, mask, err_msg=f.name)
