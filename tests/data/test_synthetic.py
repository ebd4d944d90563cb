"""The built-in synthetic dataset: reproducible, aligned, split cleanly, crowded and not trivial."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.measure import regionprops

from litenext_monai.data import generate_synthetic_dataset
from litenext_monai.data.synthetic import main

SMALL = {"num_train": 12, "num_val": 4, "num_test": 8}


def _entries(datalist: dict) -> list[dict]:
    return [e for split in ("training", "validation", "test") for e in datalist[split]]


def _file_digests(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def nuclei(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nuclei")
    path = generate_synthetic_dataset(folder, variant="nuclei", seed=7, **SMALL)
    return path, json.loads(path.read_text())


def _load(folder, entry) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(Image.open(folder / entry["image"])), np.asarray(Image.open(folder / entry["label"]))


def test_same_seed_same_bytes_other_seed_differs(tmp_path, nuclei) -> None:
    path, _ = nuclei
    again = generate_synthetic_dataset(tmp_path / "again", variant="nuclei", seed=7, **SMALL)
    assert _file_digests(path.parent) == _file_digests(again.parent)
    other = generate_synthetic_dataset(tmp_path / "other", variant="nuclei", seed=8, **SMALL)
    first, second = _file_digests(path.parent), _file_digests(other.parent)
    assert first.keys() == second.keys()
    assert all(first[k] != second[k] for k in first if k.startswith("images/"))


def test_splits_sizes_disjoint_and_hash(nuclei) -> None:
    path, datalist = nuclei
    assert [len(datalist[s]) for s in ("training", "validation", "test")] == [12, 4, 8]
    ids = [e["case_id"] for e in _entries(datalist)]
    assert len(ids) == len(set(ids)) == 24
    # The documented canonical form: per split, sorted [case_id, image, label] triples.
    canonical = json.dumps(
        {
            s: sorted([e["case_id"], e["image"], e["label"]] for e in datalist[s])
            for s in ("training", "validation", "test")
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    assert datalist["split_hash"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert (datalist["variant"], datalist["seed"], datalist["image_size"]) == ("nuclei", 7, 128)


def test_datalist_loads_with_monai(nuclei) -> None:
    path, _ = nuclei
    items = load_decathlon_datalist(str(path), data_list_key="validation", base_dir=str(path.parent))
    assert len(items) == 4
    for item in items:
        assert item["image"].startswith(str(path.parent)) and item["label"].endswith(".png")


def test_masks_binary_and_aligned_with_bright_nuclei(nuclei) -> None:
    path, datalist = nuclei
    contrast = []
    for entry in _entries(datalist):
        image, mask = _load(path.parent, entry)
        assert image.shape == mask.shape == (128, 128) and image.dtype == mask.dtype == np.uint8
        assert set(np.unique(mask)) <= {0, 255} and mask.any()
        contrast.append(image[mask == 255].mean() - image[mask == 0].mean())
    assert np.mean(contrast) > 20  # grey levels
    assert np.mean(np.array(contrast) > 0) == 1.0


def test_objects_touch_and_merge(nuclei) -> None:
    path, datalist = nuclei
    drawn, components, solidities = 0, 0, []
    for entry in _entries(datalist):
        _, mask = _load(path.parent, entry)
        labels, count = ndimage.label(mask > 0)
        drawn += entry["num_objects"]
        components += count
        solidities += [r.solidity for r in regionprops(labels)]
    # Touching nuclei fuse into one component; a lone ellipse is convex (solidity ~1).
    assert components < 0.7 * drawn
    assert np.mean(np.array(solidities) < 0.85) > 0.1


def test_global_otsu_threshold_is_far_from_solving_it(nuclei) -> None:
    path, datalist = nuclei
    dices = []
    for entry in _entries(datalist):
        image, mask = _load(path.parent, entry)
        pred, gt = image > threshold_otsu(image), mask > 0
        dices.append(2 * (pred & gt).sum() / (pred.sum() + gt.sum()))
    assert np.mean(dices) < 0.8


def test_lesion_variant_is_rgb_with_binary_masks(tmp_path) -> None:
    path = generate_synthetic_dataset(
        tmp_path, variant="lesion", num_train=3, num_val=1, num_test=1, image_size=64
    )
    datalist = json.loads(path.read_text())
    for entry in _entries(datalist):
        image, mask = _load(tmp_path, entry)
        assert image.shape == (64, 64, 3) and mask.shape == (64, 64)
        assert set(np.unique(mask)) == {0, 255}
        grey = image.mean(axis=-1)
        assert grey[mask == 255].mean() < grey[mask == 0].mean()  # pigmented lesion on lighter skin


def test_reuse_and_parameter_mismatch(tmp_path) -> None:
    path = generate_synthetic_dataset(tmp_path, num_train=2, num_val=1, num_test=1, image_size=48)
    stamp = path.stat().st_mtime_ns
    assert generate_synthetic_dataset(tmp_path, num_train=2, num_val=1, num_test=1, image_size=48) == path
    assert path.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="overwrite"):
        generate_synthetic_dataset(tmp_path, num_train=3, num_val=1, num_test=1, image_size=48)
    generate_synthetic_dataset(
        tmp_path, num_train=1, num_val=1, num_test=1, image_size=48, seed=1, overwrite=True
    )
    assert len(list((tmp_path / "images").glob("*.png"))) == 3  # files of the old dataset were removed
    assert json.loads(path.read_text())["seed"] == 1


def test_bad_arguments_raise(tmp_path) -> None:
    with pytest.raises(ValueError, match="variant"):
        generate_synthetic_dataset(tmp_path, variant="cells")
    with pytest.raises(ValueError, match="image_size"):
        generate_synthetic_dataset(tmp_path, image_size=8)


def test_cli_writes_dataset(tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    args = "--variant lesion --num-train 2 --num-val 1 --num-test 1 --image-size 48 --seed 3".split()
    assert main([str(out), *args]) == 0
    printed = capsys.readouterr().out.strip()
    datalist = json.loads((out / "datalist.json").read_text())
    assert printed == str(out / "datalist.json")
    assert (datalist["variant"], datalist["seed"], len(datalist["training"])) == ("lesion", 3, 2)
