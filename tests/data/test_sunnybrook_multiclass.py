"""Sunnybrook read as several classes: LV cavity = 1, myocardium = 2, from both expert contours."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.uid import generate_uid

from litenext_monai.data import prepare_dataset, validate_prepared, verify_split_hash
from tests.dicom_helpers import write_dicom_slice

from .layout_helpers import rect_mask, tree_digest

H, W = 40, 48
# Pixel-centre rule: x∈[9.5, 20.5], y∈[5.5, 30.5] fills columns 10..20, rows 6..30; the outer
# contour is 2 px larger on every side: columns 8..22, rows 4..32.
INNER = [(9.5, 5.5), (20.5, 5.5), (20.5, 30.5), (9.5, 30.5)]
OUTER = [(7.5, 3.5), (22.5, 3.5), (22.5, 32.5), (7.5, 32.5)]


def _contour(folder: Path, name: str, points) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(f"{x:.2f} {y:.2f}" for x, y in points))


def _release(raw: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    expected = {}
    cavity, epi = rect_mask(H, W, 6, 10, 31, 21), rect_mask(H, W, 4, 8, 33, 23)
    for p in range(1, 6):
        series = generate_uid()
        for number in (20, 40, 60):
            write_dicom_slice(
                raw / "challenge_training" / f"SC-HF-I-{p}" / f"IM-0004-{number:04d}.dcm",
                rng.integers(0, 4000, (H, W)).astype(np.uint16),
                series_uid=series,
                position=(0.0, 0.0, number / 10),
                spacing=(1.25, 1.25),
                patient_id=f"P{p}",
                bits_stored=12,
            )
        contours = raw / "Contours" / f"SC-HF-I-{p:02d}" / "contours-manual" / "IRCCI-expert"
        for number in (20, 40):
            _contour(contours, f"IM-0001-{number:04d}-icontour-manual.txt", INNER)
            _contour(contours, f"IM-0001-{number:04d}-ocontour-manual.txt", OUTER)
            labels = np.zeros((H, W), np.uint8)
            labels[epi] = 2
            labels[cavity] = 1
            expected[f"SC-HF-I-{p}_{number:04d}"] = labels
        _contour(contours, "IM-0001-0060-icontour-manual.txt", INNER)  # no epicardium: skipped
    return expected


@pytest.mark.parametrize("layout", ["sunnybrook_endo", "sunnybrook_epi"])
def test_multiclass_option_writes_cavity_and_myocardium_label_maps(tmp_path: Path, layout: str) -> None:
    raw = tmp_path / "raw"
    expected = _release(raw)
    before = tree_digest(raw)
    result = prepare_dataset(layout, raw, tmp_path / "out", multiclass=True)
    assert tree_digest(raw) == before
    assert verify_split_hash(tmp_path / "out" / "datalist.json")
    datalist = json.loads((tmp_path / "out" / "datalist.json").read_text())
    assert datalist["num_classes"] == 2
    entries = {e["case_id"]: e for key in ("training", "validation", "test") for e in datalist[key]}
    assert set(entries) == set(expected)
    for case, labels in expected.items():
        stored = nib.load(str(tmp_path / "out" / entries[case]["label"]))
        data = np.asarray(stored.dataobj)
        assert data.dtype == np.uint8 and np.array_equal(data, labels), case
        # myocardium ring: 2 px on each side of the cavity, counted by hand
        assert int((data == 2).sum()) == 15 * 29 - 11 * 25
    skipped = [i for i in result.report.warnings if i.kind == "missing_contour"]
    assert len(skipped) == 5 and all("0060" in i.file for i in skipped)
    assert validate_prepared(tmp_path / "out").ok(strict=False)


def test_binary_reading_is_unchanged_without_the_option(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _release(raw)
    prepare_dataset("sunnybrook_epi", raw, tmp_path / "out")
    datalist = json.loads((tmp_path / "out" / "datalist.json").read_text())
    assert "num_classes" not in datalist
    first = datalist["training"][0]
    data = np.asarray(nib.load(str(tmp_path / "out" / first["label"])).dataobj)
    assert set(np.unique(data).tolist()) == {0, 1} and int(data.sum()) == 15 * 29


def test_command_line_flag_selects_the_multiclass_reading(tmp_path: Path, capsys) -> None:
    raw = tmp_path / "raw"
    expected = _release(raw)
    spec = importlib.util.spec_from_file_location(
        "prepare_dataset_cli", Path(__file__).resolve().parents[2] / "scripts" / "prepare_dataset.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["sunnybrook_epi", str(raw), str(tmp_path / "out"), "--multiclass"]) == 0
    datalist = json.loads((tmp_path / "out" / "datalist.json").read_text())
    assert datalist["num_classes"] == 2
    assert len([e for key in ("training", "validation", "test") for e in datalist[key]]) == len(expected)
    assert "missing_contour" in capsys.readouterr().out
