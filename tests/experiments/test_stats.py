"""Comparison statistics against scipy, hand computation and constructed tables with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from litenext_monai.experiments.stats import (
    compare_to_reference,
    hierarchical_bootstrap_ci,
    holm,
    paired_differences,
    paired_tests,
    per_seed_means,
    unit_table,
)


def _rows(model: str, table: list[list[float]], patients: list[str] | None = None) -> list[dict]:
    """Per-image rows from a seeds × cases table of Dice values."""
    return [
        {
            "model": model,
            "seed": s,
            "case": f"c{i}",
            "dice": v,
            **({"patient": patients[i]} if patients else {}),
        }
        for s, row in enumerate(table)
        for i, v in enumerate(row)
    ]


A = [[0.90, 0.80, 0.85, 0.70, 0.95, 0.60], [0.88, 0.82, 0.80, 0.72, 0.90, 0.65]]
B = [[0.85, 0.70, 0.86, 0.60, 0.90, 0.40], [0.80, 0.75, 0.84, 0.66, 0.85, 0.55]]
C = [[0.91, 0.79, 0.84, 0.71, 0.96, 0.58], [0.89, 0.80, 0.81, 0.74, 0.91, 0.66]]


def test_paired_tests_match_scipy_and_the_t_distribution_by_hand():
    a = np.mean(A, axis=0)
    b = np.mean(B, axis=0)
    diff = a - b
    n = len(diff)
    t = diff.mean() / (diff.std(ddof=1) / math.sqrt(n))
    p_t, p_w = paired_tests(list(a), list(b))
    assert p_t == pytest.approx(2 * stats.t.sf(abs(t), df=n - 1), rel=1e-9)
    assert p_t == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-12)
    assert p_w == pytest.approx(stats.wilcoxon(a, b).pvalue, rel=1e-12)
    # exact Wilcoxon by hand: 6 distinct |differences|, one negative with the smallest size -> W- = 1;
    # P(W- <= 1) = #{{}, {1}} / 2**6, two-sided p = 2 * 2 / 64
    assert sorted(abs(diff)).index(abs(diff[diff < 0][0])) == 0 and sum(diff < 0) == 1
    assert p_w == pytest.approx(2 * 2 / 2**6)
    assert paired_tests(list(a), list(a)) == (1.0, 1.0)
    assert all(math.isnan(p) for p in paired_tests([0.5], [0.4]))


def test_holm_against_hand_computation():
    p = [0.01, 0.04, 0.03, math.nan, 0.005]
    # sorted finite: 0.005 (x4) = 0.02, 0.01 (x3) = 0.03, 0.03 (x2) = 0.06, 0.04 (x1) -> max(0.06, 0.04) = 0.06
    adjusted = holm(p)
    assert adjusted[4] == pytest.approx(0.02)
    assert adjusted[0] == pytest.approx(0.03)
    assert adjusted[2] == pytest.approx(0.06)
    assert adjusted[1] == pytest.approx(0.06)
    assert math.isnan(adjusted[3])
    assert holm([0.6, 0.7]) == [1.0, 1.0]
    assert holm([]) == []


def test_bootstrap_identical_models_and_constant_offset():
    rng = np.random.default_rng(3)
    noise = rng.uniform(0.5, 0.9, size=(3, 10))
    # identical models: every difference is 0 -> the CI is exactly [0, 0] and contains 0
    mean, low, high = hierarchical_bootstrap_ci(noise - noise, n_boot=2000, seed=1)
    assert (mean, low, high) == (0.0, 0.0, 0.0)
    # a constant offset d on every seed and case -> CI == [d, d]
    d = 0.0625
    mean, low, high = hierarchical_bootstrap_ci((noise + d) - noise, n_boot=2000, seed=1)
    assert mean == pytest.approx(d) and low == pytest.approx(d) and high == pytest.approx(d)


def test_bootstrap_includes_seed_variance():
    # Every case improves by +0.1 in seed 0 and worsens by 0.1 in seed 1: a case-only view (seed
    # average) sees no difference with zero spread, the seed level must widen the interval.
    d = np.array([[0.1] * 8, [-0.1] * 8])
    mean, low, high = hierarchical_bootstrap_ci(d, n_boot=4000, seed=0)
    assert mean == pytest.approx(0.0)
    assert low == pytest.approx(-0.1) and high == pytest.approx(0.1)
    # Hand check of the resampling law for one seed: the replicate means of a 1 × 2 matrix
    # [0, 1] are 0, 0.5, 1 with probability 1/4, 1/2, 1/4 -> the 95 % interval is [0, 1].
    _, low, high = hierarchical_bootstrap_ci(np.array([[0.0, 1.0]]), n_boot=4000, seed=0)
    assert (low, high) == (0.0, 1.0)
    # Reproducible with a fixed seed, different with another
    first = hierarchical_bootstrap_ci(np.array(A) - np.array(B), n_boot=500, seed=7)
    assert first == hierarchical_bootstrap_ci(np.array(A) - np.array(B), n_boot=500, seed=7)
    assert first[1] < first[0] < first[2]


def test_unit_table_aggregates_per_patient_and_seed_means():
    patients = ["p1", "p1", "p2", "p2", "p3", "p3"]
    per_image = _rows("a", A, patients)
    by_patient = unit_table(per_image, "dice")  # every row has a patient -> per patient
    assert by_patient["a"][0]["p1"] == pytest.approx((0.90 + 0.80) / 2)
    assert by_patient["a"][1]["p3"] == pytest.approx((0.90 + 0.65) / 2)
    by_case = unit_table(per_image, "dice", by_patient=False)
    assert set(by_case["a"][0]) == {f"c{i}" for i in range(6)}
    assert per_seed_means(by_case["a"]) == pytest.approx({0: np.mean(A[0]), 1: np.mean(A[1])})
    seeds, units, d = paired_differences(
        unit_table(_rows("a", A), "dice")["a"], unit_table(_rows("b", B), "dice")["b"]
    )
    assert seeds == [0, 1] and len(units) == 6
    np.testing.assert_allclose(d, np.array(A) - np.array(B))


def test_compare_to_reference_against_scipy_and_holm():
    per_image = _rows("ref", A) + _rows("b", B) + _rows("c", C)
    out = compare_to_reference(per_image, ["ref", "b", "c"], "ref", n_boot=1000)
    ref_cases = np.mean(A, axis=0)
    raw = {}
    for name, table in (("b", B), ("c", C)):
        cases = np.mean(table, axis=0)
        raw[name] = (stats.ttest_rel(cases, ref_cases).pvalue, stats.wilcoxon(cases, ref_cases).pvalue)
        assert out[name]["p_t"] == pytest.approx(raw[name][0], rel=1e-12)
        assert out[name]["p_wilcoxon"] == pytest.approx(raw[name][1], rel=1e-12)
        assert out[name]["diff"] == pytest.approx(float(np.mean(np.array(table) - np.array(A))))
        assert out[name]["ci_low"] <= out[name]["diff"] <= out[name]["ci_high"]
        assert out[name]["units"] == 6 and out[name]["seeds_paired"] == 2 and out[name]["unit"] == "case"
    # Holm over the two models by hand
    for i in (0, 1):
        key = ("p_t", "p_wilcoxon")[i]
        lo, hi = sorted(["b", "c"], key=lambda m: raw[m][i])
        assert out[lo][f"{key}_holm"] == pytest.approx(min(1.0, 2 * raw[lo][i]))
        assert out[hi][f"{key}_holm"] == pytest.approx(max(min(1.0, 2 * raw[lo][i]), raw[hi][i]))
    assert math.isnan(out["ref"]["diff"]) and math.isnan(out["ref"]["p_wilcoxon_holm"])
    # B is worse than the reference on every case in both seeds: the CI lies below 0
    assert out["b"]["ci_high"] < 0
