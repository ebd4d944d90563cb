"""The validation pass: every problem reported with its file; --strict; RAW_DIR untouched."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from litenext_monai.data import ValidationError, prepare_dataset, validate_prepared

from .layout_helpers import random_image, rect_mask, tree_digest

ROOT = Path(__file__).resolve().parents[2]


def _cli():
    spec = importlib.util.spec_from_file_location(
        "prepare_dataset_cli", ROOT / "scripts" / "prepare_dataset.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _bad_release(raw: Path) -> None:
    rng = np.random.default_rng(30)
    images, masks = raw / "Kvasir-SEG" / "images", raw / "Kvasir-SEG" / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    duplicate = random_image(rng, 20, 20)
    for i in range(8):
        image = duplicate if i in (0, 1) else random_image(rng, 20, 20)
        Image.fromarray(image).save(images / f"ok{i}.png")
        mask = rect_mask(20, 20, 2, 2, 10, 10) if i != 2 else np.zeros((20, 20), bool)  # one empty mask
        Image.fromarray(mask.astype(np.uint8) * 255).save(masks / f"ok{i}.png")
    Image.fromarray(random_image(rng, 20, 20)).save(images / "nomask.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(masks / "noimage.png")
    Image.fromarray(random_image(rng, 20, 20)).save(images / "small.png")
    Image.fromarray(np.zeros((10, 20), np.uint8)).save(masks / "small.png")
    (images / "broken.png").write_bytes(Image.new("RGB", (20, 20)).tobytes()[:50])
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(masks / "broken.png")
    with open(images / "truncated.png", "wb") as handle:
        buffer = images / "full.tmp"
        Image.fromarray(random_image(rng, 40, 40)).save(buffer, format="PNG")
        handle.write(buffer.read_bytes()[:200])
        buffer.unlink()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(masks / "truncated.png")


def test_every_problem_is_reported_with_its_file(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _bad_release(raw)
    before = tree_digest(raw)
    result = prepare_dataset("kvasir_seg", raw, tmp_path / "out", seed=1)
    assert tree_digest(raw) == before
    found = {(i.kind, Path(i.file).name) for i in result.report.issues}
    assert ("image_without_mask", "nomask.png") in found
    assert ("mask_without_image", "noimage.png") in found
    assert ("size_mismatch", "small.png") in found
    assert ("unreadable", "broken.png") in found
    assert ("unreadable", "truncated.png") in found
    kinds = {i.kind for i in result.report.issues}
    assert kinds & {"duplicate_image", "duplicate_across_splits"}
    assert result.report.empty_masks == ["ok2"]
    assert result.report.n_cases == 8
    report = json.loads((tmp_path / "out" / "validation_report.json").read_text())
    assert report["n_cases"] == 8 and report["counts"]["size_mismatch"] == 1
    with pytest.raises(ValidationError, match="small.png"):
        prepare_dataset("kvasir_seg", raw, tmp_path / "strict", strict=True)
    assert not (tmp_path / "strict" / "datalist.json").exists()
    assert tree_digest(raw) == before


def test_unexpected_mask_values_and_strict_cli(tmp_path: Path) -> None:
    raw = tmp_path / "raw" / "CVC-ColonDB"
    rng = np.random.default_rng(31)
    for i in range(4):
        (raw / "images").mkdir(parents=True, exist_ok=True)
        (raw / "masks").mkdir(exist_ok=True)
        Image.fromarray(random_image(rng, 16, 16)).save(raw / "images" / f"{i}.png")
        mask = rect_mask(16, 16, 2, 2, 9, 9).astype(np.uint8) * 255
        if i == 3:
            mask[0, 0] = 128  # a third value in a binary mask
        Image.fromarray(mask).save(raw / "masks" / f"{i}.png")
    main = _cli()
    assert main(["cvc_colondb", str(tmp_path / "raw"), "--validate-only"]) == 0
    assert not (tmp_path / "out").exists()
    assert main(["cvc_colondb", str(tmp_path / "raw"), "--validate-only", "--strict"]) == 1
    assert main(["cvc_colondb", str(tmp_path / "raw"), str(tmp_path / "out")]) == 0
    assert main(["--check", str(tmp_path / "out")]) == 0
    assert main(["--list"]) == 0
    assert main(["nonexistent", str(tmp_path / "raw"), str(tmp_path / "o2")]) == 2
    assert main(["cvc_colondb", str(tmp_path / "raw"), str(tmp_path / "raw" / "inside")]) == 2


def test_validate_prepared_finds_problems(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    rng = np.random.default_rng(32)
    same = random_image(rng, 12, 12)
    entries = []
    for name, image, mask in (
        ("a", same, rect_mask(12, 12, 0, 0, 5, 5)),
        ("b", same, np.zeros((12, 12), bool)),
        ("c", random_image(rng, 12, 12), rect_mask(12, 10, 0, 0, 5, 5)),
    ):
        Image.fromarray(image).save(out / "images" / f"{name}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(out / "masks" / f"{name}.png")
        entries.append({"image": f"images/{name}.png", "label": f"masks/{name}.png", "case_id": name})
    Image.fromarray(same).save(out / "images" / "orphan.png")
    (out / "datalist.json").write_text(
        json.dumps({"training": entries[:1] + entries[2:], "validation": entries[1:2], "test": []})
    )
    report = validate_prepared(out)
    kinds = {(i.kind, Path(i.file).name) for i in report.issues}
    assert ("size_mismatch", "c.png") in kinds
    assert ("image_without_mask", "orphan.png") in kinds
    assert any(i.kind == "duplicate_across_splits" for i in report.issues)
    assert report.empty_masks == ["b"]
    with pytest.raises(ValidationError):
        validate_prepared(out, strict=True)
