"""Splits: determinism, ratios, patient grouping, official splits, k-fold and the split hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from litenext_monai.data import kfold_split, official_split, ratio_split, split_hash, verify_split_hash

CASES = [f"c{i:03d}" for i in range(100)]


def test_ratio_split_is_deterministic_and_sized() -> None:
    a, b = ratio_split(CASES, seed=7), ratio_split(CASES, seed=7)
    assert a == b
    assert [len(a[k]) for k in ("training", "validation", "test")] == [70, 10, 20]
    assert sorted(a["training"] + a["validation"] + a["test"]) == CASES
    assert ratio_split(CASES, seed=8) != a


def test_patients_never_in_two_splits() -> None:
    groups = {c: f"p{i // 7}" for i, c in enumerate(CASES)}  # 7 slices per patient
    for seed in range(5):
        split = ratio_split(CASES, (0.8, 0.1, 0.1), seed, groups)
        patients = [{groups[c] for c in split[k]} for k in ("training", "validation", "test")]
        assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
        assert sum(len(v) for v in split.values()) == 100


def test_official_split_keeps_test_and_draws_validation_from_train() -> None:
    subsets = {c: ("test" if i >= 80 else "train") for i, c in enumerate(CASES)}
    split = official_split(subsets, (0.8, 0.2, 0.0), seed=0)
    assert split["test"] == CASES[80:]
    assert len(split["validation"]) == 16 and len(split["training"]) == 64
    with pytest.raises(ValueError, match="'train' or 'test'"):
        official_split({"a": "val"})


def test_kfold_covers_every_case_once_as_validation() -> None:
    groups = {c: f"p{i // 4}" for i, c in enumerate(CASES)}
    test = CASES[:10]
    seen = []
    for fold in range(5):
        split = kfold_split(CASES, 5, fold, seed=3, groups=groups, test_ids=test)
        assert split["test"] == test
        assert not set(split["validation"]) & set(split["training"])
        assert not {groups[c] for c in split["validation"]} & {groups[c] for c in split["training"]}
        seen += split["validation"]
    assert sorted(seen) == sorted(set(CASES) - set(test))
    with pytest.raises(ValueError):
        kfold_split(CASES, 5, 5)


def test_split_hash_tracks_membership_only(tmp_path: Path) -> None:
    datalist = {
        "training": [
            {"image": "images/a.png", "label": "masks/a.png", "case_id": "a"},
            {"image": "images/b.png", "label": "masks/b.png", "case_id": "b"},
        ],
        "validation": [{"image": "images/c.png", "label": "masks/c.png", "case_id": "c"}],
        "test": [],
    }
    reordered = dict(datalist, training=list(reversed(datalist["training"])), name="other")
    moved = dict(
        datalist,
        training=datalist["training"][:1],
        validation=datalist["training"][1:] + datalist["validation"],
    )
    assert split_hash(datalist) == split_hash(reordered)
    assert split_hash(datalist) != split_hash(moved)
    assert len(split_hash(datalist)) == 64
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(dict(datalist, split_hash=split_hash(datalist))))
    assert verify_split_hash(path) and split_hash(path) == split_hash(datalist)
    path.write_text(json.dumps(dict(moved, split_hash=split_hash(datalist))))
    assert not verify_split_hash(path)
