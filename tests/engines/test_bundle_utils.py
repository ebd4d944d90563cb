"""Bundle helpers: inference inputs skip unreadable files; split hashes have one definition."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from litenext_monai.engines import (
    BatchFailedError,
    FailureReport,
    datalist_split_hash,
    inference_items,
    make_run_name,
)


def _png(path, value=0):
    Image.fromarray(np.full((20, 30), value, dtype=np.uint8)).save(path)
    return str(path)


def test_unreadable_files_are_logged_and_reported(tmp_path, caplog):
    good = [_png(tmp_path / "a.png", 10), _png(tmp_path / "c.png", 20)]
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    original = (tmp_path / "b.png").read_bytes()
    report = FailureReport(tmp_path / "out")
    with caplog.at_level(logging.ERROR):
        items = inference_items(str(tmp_path), failures=report)
    assert [i["image"] for i in items] == good
    assert "b.png" in caplog.text and "no output" in caplog.text
    assert [Path(p).name for p, _ in report.failures] == ["b.png"] and report.total == 3
    assert (tmp_path / "b.png").read_bytes() == original  # inputs are never modified


def test_all_unreadable_writes_the_report_and_fails(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image")
    report = FailureReport(tmp_path / "out")
    with pytest.raises(BatchFailedError, match="none of the 1 inputs could be segmented"):
        inference_items(str(tmp_path), failures=report)
    assert "x.png" in (tmp_path / "out" / "failures.csv").read_text()
    with pytest.raises(ValueError, match="no images"):
        inference_items(str(tmp_path / "out" / "nothing_here_*.png"))


def test_datalist_split_and_glob_sources(tmp_path):
    (tmp_path / "images").mkdir()
    paths = [_png(tmp_path / "images" / f"{i}.png") for i in range(3)]
    datalist = {
        "training": [],
        "validation": [],
        "test": [{"image": "images/1.png", "label": "images/1.png"}],
    }
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    (item,) = inference_items(str(tmp_path / "datalist.json"))
    assert (
        item["image"] == paths[1] and item["output_name"] == "1_mask.png" and item["output_format"] == "png"
    )
    assert [i["image"] for i in inference_items(str(tmp_path / "images" / "*.png"))] == paths
    with pytest.raises(ValueError, match="no split 'nope'"):
        inference_items(str(tmp_path / "datalist.json"), split="nope")


def test_datalist_split_hash_prefers_stored_and_otherwise_hashes_canonical_split(tmp_path):
    entry = {"image": "i/a.png", "label": "m/a.png", "case_id": "a"}
    data = {"training": [entry], "validation": [], "test": []}
    (tmp_path / "d.json").write_text(json.dumps(data))
    canonical = json.dumps(
        {"test": [], "training": [["a", "i/a.png", "m/a.png"]], "validation": []},
        sort_keys=True,
        separators=(",", ":"),
    )
    assert datalist_split_hash(tmp_path / "d.json") == hashlib.sha256(canonical.encode()).hexdigest()
    (tmp_path / "e.json").write_text(json.dumps({**data, "split_hash": "abc"}))
    assert datalist_split_hash(tmp_path / "e.json") == "abc"


def test_run_names_are_unique_per_launch_and_kept_on_resume(tmp_path):
    state = tmp_path / "last_run_name.txt"
    first = make_run_name("train", state)
    assert make_run_name("train", state) != first
    second = state.read_text().strip()
    assert make_run_name("train", state, resume=True) == second
