"""Bundle helpers: inference inputs skip unreadable files; split hashes have one definition."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from litenext_monai.data.splits import datalist_split_hash
from litenext_monai.engines import make_run_name
from litenext_monai.inference import BatchFailedError, FailureReport, inference_items


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


def test_sharding_deals_out_whole_outputs_and_skip_existing(tmp_path, monkeypatch):
    from litenext_monai.inference import inputs

    items = [{"image": f"s{i}.dcm", "output_name": "series.dcm"} for i in range(3)]
    items += [{"image": f"img{i}.png", "output_name": f"img{i}_mask.png"} for i in range(4)]
    shards = []
    for rank in (0, 1):
        monkeypatch.setattr(inputs.idist, "get_rank", lambda rank=rank: rank)
        monkeypatch.setattr(inputs.idist, "get_world_size", lambda: 2)
        shards.append(inputs._select(items, None, shard=True))
    assert sorted(i["image"] for s in shards for i in s) == sorted(i["image"] for i in items)  # all, once
    assert not {i["image"] for i in shards[0]} & {i["image"] for i in shards[1]}
    series_ranks = {r for r, s in enumerate(shards) for i in s if i["output_name"] == "series.dcm"}
    assert len(series_ranks) == 1  # the slices of one series stay on one rank, in order
    assert [i["image"] for s in shards for i in s if i["output_name"] == "series.dcm"] == [
        "s0.dcm",
        "s1.dcm",
        "s2.dcm",
    ]
    (tmp_path / "img1_mask.png").write_bytes(b"done")
    monkeypatch.setattr(inputs.idist, "get_rank", lambda: 0)
    monkeypatch.setattr(inputs.idist, "get_world_size", lambda: 1)
    kept = inputs._select(items, tmp_path, shard=True)
    assert {i["output_name"] for i in kept} == {
        "series.dcm",
        "img0_mask.png",
        "img2_mask.png",
        "img3_mask.png",
    }
