"""Benchmark library: table building, peak-memory accounting and the peer list (no timing assertions)."""

from __future__ import annotations

import torch

from litenext_monai.experiments.benchmark import (
    REFERENCE,
    PeakActivationMemory,
    Row,
    format_table,
    interleaved_medians,
    peak_activation_bytes,
    peer_models,
)


def test_format_table_ratios_to_reference_and_missing_values():
    rows = [
        Row("LiteNeXt deploy form", 711_201, {"b1": 10.0, "mem": 3.0}),
        Row(REFERENCE, 1_600_000, {"b1": 40.0, "mem": 6.0}),
        Row("Other", 5, {"b1": 60.0}),
    ]
    table = format_table(rows, [("b1", "batch 1 (ms)", "{:.1f}"), ("mem", "MiB", "{:.1f}")])
    lines = table.splitlines()
    assert lines[0] == "| model | params | batch 1 (ms) | × UNet | MiB | × UNet |"
    assert lines[1] == "|---|---:|---:|---:|---:|---:|"
    assert lines[2] == "| LiteNeXt deploy form | 711,201 | 10.0 | 0.25 | 3.0 | 0.50 |"
    assert lines[3] == f"| {REFERENCE} | 1,600,000 | 40.0 | 1.00 | 6.0 | 1.00 |"
    assert lines[4] == "| Other | 5 | 60.0 | 1.50 | – | – |"


def test_format_table_without_reference_row_has_no_ratios():
    table = format_table([Row("A", 1, {"x": 2.0})], [("x", "x", "{:.0f}")])
    assert table.splitlines()[2] == "| A | 1 | 2 | – |"


def test_peak_activation_memory_counts_live_storages_once():
    x = torch.zeros(256, 1024)  # 1 MiB, an input: not counted

    class Toy(torch.nn.Module):
        def forward(self, x):
            a = x + 1  # 1 MiB
            b = a * 2  # 1 MiB, live with a: peak 2 MiB
            del a
            b.add_(1)  # in place: no new storage
            view = b.t()  # a view: same storage
            c = view.exp()  # 1 MiB with b: 2 MiB
            return c.sum()

    assert peak_activation_bytes(Toy(), x) == 2 * 2**20 + 4  # b, c and the 4-byte sum
    with PeakActivationMemory() as tracker:
        kept = torch.ones(1024, 256)
        del kept
        torch.ones(512, 256)
    assert tracker.peak == 2**20 and tracker.live == 0


def test_interleaved_medians_runs_every_step_in_rounds():
    calls: list[str] = []
    result = interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 2, 3, 1)
    assert set(result) == {"a", "b"} and all(v >= 0 for v in result.values())
    # warm-up a, b, then rounds a a a b b b, a a a b b b
    assert calls == ["a", "b"] + (["a"] * 3 + ["b"] * 3) * 2


def test_peer_models_include_liteneXt_forms_and_monai_peers():
    factories, notes = peer_models()
    for name in (
        "LiteNeXt deploy form",
        "LiteNeXt training form",
        REFERENCE,
        "MONAI BasicUNet",
        "MONAI AttentionUnet",
    ):
        assert name in factories
    assert all(isinstance(note, str) for note in notes)
    deploy = factories["LiteNeXt deploy form"]()
    assert deploy.deployed and not deploy.training
