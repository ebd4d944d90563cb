"""Synthetic variants for several classes (label maps 0/1/2) and for large images with small structures."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from monai.data import load_decathlon_datalist
from PIL import Image
from scipy import ndimage

from litenext_monai.data import generate_synthetic_dataset, validate_prepared
from litenext_monai.data.synthetic import main, render_case


def _digests(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.png"))
    }


def test_multiclass_label_maps_hold_touching_classes(tmp_path) -> None:
    path = generate_synthetic_dataset(
        tmp_path / "mc", variant="multiclass", num_train=6, num_val=2, num_test=2
    )
    datalist = json.loads(path.read_text())
    assert datalist["num_classes"] == 2
    assert datalist["labels"] == {"0": "background", "1": "cytoplasm", "2": "nucleus"}
    entries = load_decathlon_datalist(str(path), data_list_key="training")
    assert len(entries) == 6
    cross_class_borders = 0
    for entry in [*entries, *load_decathlon_datalist(str(path), data_list_key="test")]:
        image = np.asarray(Image.open(entry["image"]))
        labels = np.asarray(Image.open(entry["label"]))
        assert image.shape == (128, 128, 3) and labels.shape == (128, 128) and labels.dtype == np.uint8
        assert set(np.unique(labels).tolist()) == {0, 1, 2}
        nucleus = labels == 2
        # every nucleus lies inside a cell: its 1-pixel ring is (almost) all cytoplasm or nucleus
        ring = ndimage.binary_dilation(nucleus) & ~nucleus
        assert (labels[ring] == 0).mean() < 0.1
        cross_class_borders += int((labels[ring] == 1).sum())
        # nuclei are darker (haematoxylin) than cytoplasm, cytoplasm darker than background
        grey = image.mean(axis=-1)
        assert grey[nucleus].mean() < grey[labels == 1].mean() < grey[labels == 0].mean()
    assert cross_class_borders > 0
    # the datalist's num_classes makes the standard-layout check accept the class values
    report = validate_prepared(path.parent)
    assert report.errors == [] and not [i for i in report.warnings if i.kind == "unexpected_mask_values"]
    again = generate_synthetic_dataset(
        tmp_path / "mc2", variant="multiclass", num_train=6, num_val=2, num_test=2
    )
    assert _digests(path.parent) == _digests(again.parent)


def test_large_variant_keeps_structures_small(tmp_path) -> None:
    image, mask, count = render_case("large", seed=1, index=0, image_size=512)
    assert image.shape == (512, 512) and image.dtype == np.uint8 and mask.dtype == bool
    labelled, components = ndimage.label(mask)
    areas = np.bincount(labelled.ravel())[1:]
    # nuclei of radius 5-9.5 px whatever the image size: median component well under a 20 px disk
    assert count > 50 and components > 30 and np.median(areas) < np.pi * 20**2
    small_image, small_mask, _ = render_case("large", seed=1, index=0, image_size=256)
    small_areas = np.bincount(ndimage.label(small_mask)[0].ravel())[1:]
    assert 0.5 < np.median(areas) / np.median(small_areas) < 2.0  # size independent of the image side
    assert image[mask].mean() > image[~mask].mean() + 20
    # default size is 1024, recorded in the datalist (one case keeps the test short)
    path = generate_synthetic_dataset(tmp_path / "large", variant="large", num_train=1, num_val=0, num_test=0)
    datalist = json.loads(path.read_text())
    assert datalist["image_size"] == 1024 and datalist["num_classes"] == 1
    stored = np.asarray(Image.open(path.parent / datalist["training"][0]["label"]))
    assert stored.shape == (1024, 1024) and set(np.unique(stored).tolist()) == {0, 255}


def test_cli_accepts_the_new_variants(tmp_path, capsys) -> None:
    args = [
        str(tmp_path / "cli"),
        "--variant",
        "multiclass",
        "--num-train",
        "1",
        "--num-val",
        "0",
        "--num-test",
        "0",
    ]
    assert main(args) == 0
    assert capsys.readouterr().out.strip().endswith("datalist.json")
