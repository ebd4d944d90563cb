"""Issue 18 through the one inference path (Predictor, volume inference, DICOM SEG writer).

Oracles are MONAI's own functions and hand-written tensor code, never the code under test:
``monai.inferers.sliding_window_inference`` for the sliding window, the mean of the four flipped
forward passes for TTA, the old ``Activationsd`` + ``AsDiscreted`` pipeline for old checkpoints,
highdicom + dciodvfy for the multi-segment SEG.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer, sliding_window_inference
from monai.transforms import Activationsd, AsDiscreted, Compose, Invertd, Resized

from litenext_monai.networks import LiteNeXt
from tests.hospital_helpers import dciodvfy_errors, disk_image, read_seg, tiny_checkpoint, write_ct_series

PATCH = (32, 32)


def _network(in_channels: int = 1, out_channels: int = 1, seed: int = 0) -> LiteNeXt:
    torch.manual_seed(seed)
    return LiteNeXt(
        spatial_dims=2, in_channels=in_channels, out_channels=out_channels, base_channels=4, kernel_size=3
    ).eval()


def _image(height: int, width: int, channels: int = 1, seed: int = 0) -> MetaTensor:
    """A smooth random image in [0, 1] with structure at several scales (``C×H×W``)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, channels, height // 8 + 1, width // 8 + 1, generator=g)
    image = torch.nn.functional.interpolate(
        coarse, size=(height, width), mode="bilinear", align_corners=False
    )
    image = 0.7 * image + 0.3 * torch.rand(1, channels, height, width, generator=g)
    return MetaTensor(image[0].float(), affine=torch.eye(4, dtype=torch.float64))


def _settings(**extra) -> dict:
    return {"in_channels": 1, "image_size": list(PATCH), "modality": "none", "threshold": 0.5, **extra}


def _both_classes(mask: np.ndarray, values: set[int]) -> None:
    assert set(np.unique(mask).tolist()) == values, f"mask has values {np.unique(mask)}, expected {values}"


@pytest.mark.parametrize("num_classes", [1, 2])
def test_patch_mode_is_monai_sliding_window_at_full_size(num_classes: int) -> None:
    """An image larger than the patch: Gaussian sliding window at the image's size, no resize."""
    from litenext_monai.inference import Predictor

    out_channels = 1 if num_classes == 1 else num_classes + 1
    network = _network(out_channels=out_channels)
    image = _image(90, 71)
    overlap, batch = 0.5, 3
    with torch.no_grad():
        logits = sliding_window_inference(
            image[None].as_subclass(torch.Tensor), PATCH, batch, network, overlap=overlap, mode="gaussian"
        )[0]
    # the oracle's post-processing, by hand; a threshold at the median makes the mask two-sided
    threshold = float(torch.sigmoid(logits).median()) if num_classes == 1 else 0.5
    if num_classes == 1:
        expected = (torch.sigmoid(logits)[0] >= threshold).numpy().astype(np.uint8)
    else:
        # bias the classes apart so that every class wins somewhere (a random network favours one)
        bias = logits.flatten(1).median(dim=1).values
        network.head.bias.data -= bias
        with torch.no_grad():
            logits = sliding_window_inference(
                image[None].as_subclass(torch.Tensor), PATCH, batch, network, overlap=overlap, mode="gaussian"
            )[0]
        expected = logits.argmax(0).numpy().astype(np.uint8)
    _both_classes(expected, set(range(num_classes + 1)))

    settings = _settings(
        input_mode="patch",
        num_classes=num_classes,
        sw_overlap=overlap,
        sw_batch_size=batch,
        threshold=threshold,
    )
    predictor = Predictor(network, settings)
    assert isinstance(predictor.inferer, SlidingWindowInferer) and predictor.inferer.mode == "gaussian"
    (mask,) = predictor.predict_images([image])
    assert mask.shape == (90, 71) and mask.dtype == np.uint8
    assert np.array_equal(mask, expected), f"{int((mask != expected).sum())} pixels differ"


def test_patch_mode_image_smaller_than_the_patch() -> None:
    """MONAI pads a small image to the window and crops the logits back: same as the oracle."""
    from litenext_monai.inference import Predictor

    network = _network()
    image = _image(20, 27)
    with torch.no_grad():
        logits = sliding_window_inference(
            image[None].as_subclass(torch.Tensor), PATCH, 4, network, 0.25, "gaussian"
        )
    threshold = float(torch.sigmoid(logits).median())
    expected = (torch.sigmoid(logits)[0, 0] >= threshold).numpy().astype(np.uint8)
    (mask,) = Predictor(network, _settings(input_mode="patch", threshold=threshold)).predict_images([image])
    assert mask.shape == (20, 27) and np.array_equal(mask, expected)


@pytest.mark.parametrize("num_classes", [1, 3])
def test_tta_is_the_mean_of_the_flipped_logits(num_classes: int) -> None:
    from litenext_monai.inference import Predictor

    out_channels = 1 if num_classes == 1 else num_classes + 1
    network = _network(out_channels=out_channels, seed=1)
    image = _image(*PATCH, seed=2)  # at the network size: no resize, the oracle is exact
    x = image[None].as_subclass(torch.Tensor)
    with torch.no_grad():
        flips = [
            network(x),
            network(x.flip(3)).flip(3),
            network(x.flip(2)).flip(2),
            network(x.flip(2, 3)).flip(2, 3),
        ]
        if num_classes > 1:
            network.head.bias.data -= torch.stack(flips).mean(0)[0].flatten(1).median(dim=1).values
            flips = [
                network(x),
                network(x.flip(3)).flip(3),
                network(x.flip(2)).flip(2),
                network(x.flip(2, 3)).flip(2, 3),
            ]
    mean = torch.stack(flips).mean(0)[0]
    plain = flips[0][0]
    if num_classes == 1:
        threshold = float(torch.sigmoid(mean).median())
        expected = (torch.sigmoid(mean)[0] >= threshold).numpy().astype(np.uint8)
        without = (torch.sigmoid(plain)[0] >= threshold).numpy().astype(np.uint8)
    else:
        threshold = 0.5
        expected = mean.argmax(0).numpy().astype(np.uint8)
        without = plain.argmax(0).numpy().astype(np.uint8)
    _both_classes(expected, set(range(num_classes + 1)))
    assert not np.array_equal(expected, without), "TTA changes nothing here: the test could not fail"

    settings = _settings(num_classes=num_classes, tta=True, threshold=threshold)
    (mask,) = Predictor(network, settings).predict_images([image])
    assert np.array_equal(mask, expected), f"{int((mask != expected).sum())} pixels differ"
    (mask_off,) = Predictor(network, {**settings, "tta": False}).predict_images([image])
    assert np.array_equal(mask_off, without)


def test_old_binary_checkpoint_gives_the_same_masks(tmp_path: Path) -> None:
    """A model.json written before issue 18 (no input_mode/num_classes/sw_* keys) still loads, as
    the binary resize model it is, and gives the masks of the pre-issue-18 pipeline
    (Resized, network, Invertd, Activationsd(sigmoid) + AsDiscreted(threshold))."""
    from litenext_monai.inference import Predictor, load_network_from_checkpoint
    from litenext_monai.model import read_inference_settings

    ckpt = tiny_checkpoint(tmp_path / "old", image_size=PATCH)
    card = json.loads(ckpt.with_suffix(".json").read_text())
    assert not {"input_mode", "num_classes", "segments", "sw_overlap", "sw_batch_size"} & set(card)
    settings = read_inference_settings(ckpt)
    assert (settings["input_mode"], settings["num_classes"], settings["tta"]) == ("resize", 1, False)

    network, settings = load_network_from_checkpoint(ckpt)
    images = [_image(57, 45, seed=3), _image(*PATCH, seed=4)]
    masks = Predictor(network, settings).predict_images(images)

    resize = Resized(keys="image", spatial_size=PATCH, mode="bilinear", anti_aliasing=True)
    invert = Invertd(keys="pred", transform=Compose([resize]), orig_keys="image", nearest_interp=False)
    binarize = Compose(
        [Activationsd(keys="pred", sigmoid=True), AsDiscreted(keys="pred", threshold=card["threshold"])]
    )
    for image, mask in zip(images, masks):
        d = resize({"image": image})
        with torch.no_grad():
            d["pred"] = MetaTensor(network(d["image"][None].as_subclass(torch.Tensor))[0]).copy_meta_from(
                d["image"]
            )
        if tuple(image.shape[1:]) != PATCH:  # Resized is the identity at the network size: nothing to invert
            d = invert(d)
        expected = np.asarray(binarize(d)["pred"][0], dtype=np.uint8)
        assert mask.shape == expected.shape and np.array_equal(mask, expected)
    assert any(0.02 < m.mean() < 0.98 for m in masks)  # a one-sided mask could hide a difference


def test_card_with_inconsistent_classes_is_refused(tmp_path: Path) -> None:
    from litenext_monai.model import read_inference_settings

    ckpt = tiny_checkpoint(tmp_path / "bad", num_classes=2)  # out_channels stays 1
    with pytest.raises(ValueError, match=r"bad/model\.json: num_classes=2 needs out_channels=3"):
        read_inference_settings(ckpt)
    ckpt = tiny_checkpoint(tmp_path / "mode", input_mode="tiles")
    with pytest.raises(ValueError, match=r"mode/model\.json: 'input_mode' must be one of"):
        read_inference_settings(ckpt)


SEGMENTS = [
    {"label": "Cavity", "category": ["SCT", "91723000", "Anatomical Structure"], "type": ["SCT", "87878005", "Left ventricle"]},
    {"label": "Myocardium", "category": ["SCT", "91723000", "Anatomical Structure"], "type": ["SCT", "74281007", "Myocardium"]},
]  # fmt: skip


def _multiclass_checkpoint(folder: Path, size: int = 32) -> Path:
    """A 3-channel (N = 2) LiteNeXt checkpoint whose classes all occur on the disk images."""
    from litenext_monai.io import normalize_intensity

    network = _network(out_channels=3, seed=5)
    hu = disk_image(size, radius=9).astype(np.float32) - 1000.0
    x = torch.from_numpy(normalize_intensity(hu, "ct")).float()[None, None]
    with torch.no_grad():
        network.head.bias.data -= network(x)[0].flatten(1).median(dim=1).values
    folder.mkdir(parents=True)
    torch.save(network.state_dict(), folder / "model.pt")
    card = {
        "network_def": {"_target_": "litenext_monai.networks.LiteNeXt", "spatial_dims": 2, "in_channels": 1,
                        "out_channels": 3, "base_channels": 4, "kernel_size": 3},
        "in_channels": 1, "out_channels": 3, "image_size": [size, size], "modality": "ct", "threshold": 0.5,
        "num_classes": 2, "segments": SEGMENTS, "input_mode": "resize",
    }  # fmt: skip
    (folder / "model.json").write_text(json.dumps(card))
    return folder / "model.pt"


def test_multiclass_dicom_seg_has_one_segment_per_class(tmp_path: Path) -> None:
    from litenext_monai.inference import Predictor, load_network_from_checkpoint, segment_dicom_to_seg

    ckpt = _multiclass_checkpoint(tmp_path / "mc")
    images = [disk_image(40, radius=10 + 2 * k, centre=(18 + k, 21)) for k in range(3)]  # off the 32 px size
    files = write_ct_series(tmp_path / "series", images, names=["c.dcm", "a.dcm", "b.dcm"])
    network, settings = load_network_from_checkpoint(ckpt)
    predictor = Predictor(network, settings)
    expected = predictor.predict_images([image for f in files for image in predictor.load(f)])
    assert set(np.unique(np.stack(expected)).tolist()) == {0, 1, 2}

    seg_path = segment_dicom_to_seg(files, ckpt, tmp_path / "seg.dcm")
    assert dciodvfy_errors(seg_path) == []
    seg = read_seg(seg_path)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Cavity", "Myocardium"]
    assert seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "74281007"
    uids = [str(__import__("pydicom").dcmread(f).SOPInstanceUID) for f in files]
    labels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, ignore_spatial_locations=True
    )
    for k, mask in enumerate(expected):
        assert np.array_equal(labels[k], mask), f"slice {k}: {int((labels[k] != mask).sum())} pixels differ"


def test_multiclass_volume_is_a_label_map_slice_by_slice(tmp_path: Path) -> None:
    from litenext_monai.inference import Predictor, load_inference_network, segment_volume
    from litenext_monai.model import read_inference_settings

    ckpt = _multiclass_checkpoint(tmp_path / "mc")
    settings = read_inference_settings(ckpt)
    volume = np.stack([disk_image(40, radius=8 + 3 * k) for k in range(3)], axis=-1).astype(np.int16) - 1000
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    network = load_inference_network(ckpt)
    out = np.asarray(
        nib.load(segment_volume(network, path, tmp_path / "mask.nii.gz", settings=settings)).dataobj
    )
    assert out.shape == volume.shape and set(np.unique(out).tolist()) == {0, 1, 2}
    predictor = Predictor(network, settings)
    value_range = (float(volume.min()), float(volume.max()))
    for k in range(volume.shape[-1]):
        image = predictor.from_array(
            volume[..., k], {"spatial_shape": volume.shape[:2], "value_range": value_range}, "x"
        )
        (mask,) = predictor.predict_images([image])
        assert np.array_equal(out[..., k], mask)
