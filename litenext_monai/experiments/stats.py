"""Statistics of a model comparison: seed-level summaries, paired differences, bootstrap CIs, tests.

A comparison trains every model with several seeds and scores every test case once per seed, so
the per-image table has two sources of variation: the *seed* (initialisation, data order,
augmentation draws) and the *case* (which images happened to be in the test split). A paired
t-test over the test images treats the seed-averaged models as fixed and ignores the first; with
ten test images and a few seeds it gives tiny p-values for differences that a rerun with other
seeds can erase. This module therefore reports, for each model against a reference model:

* the mean over seeds of the per-seed test means, and their sd over seeds (:func:`per_seed_means`);
* the paired difference (model − reference) with a 95 % confidence interval from a *hierarchical
  bootstrap* over seeds and cases (:func:`hierarchical_bootstrap_ci`): resample the seeds with
  replacement, then, within every drawn seed, the cases with replacement; the spread of the
  resampled mean difference includes both sources of variation;
* the Wilcoxon signed-rank p (:func:`scipy.stats.wilcoxon`) and the paired t p
  (:func:`scipy.stats.ttest_rel`) on the per-case means over seeds; both only speak about the cases
  and both are Holm-adjusted over the models compared (:func:`holm`).

Cases are first aggregated per *unit*: the patient when the datalist gives patients (several
images of one patient are not independent), the case otherwise (:func:`unit_table`).

Seeds are paired by index: seed k of a model and seed k of the reference are trained with the same
``set_determinism(seed=k)`` on the same split, and the per-case difference is taken within each
seed. Only seeds and units present for both models enter.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "unit_table",
    "per_seed_means",
    "paired_differences",
    "hierarchical_bootstrap_ci",
    "paired_tests",
    "holm",
    "compare_to_reference",
]


def unit_table(
    per_image: Sequence[Mapping[str, Any]], metric: str, by_patient: bool | None = None
) -> dict[str, dict[Any, dict[str, float]]]:
    """Per model, seed and unit: the mean of ``metric`` over the unit's images.

    Args:
        per_image: rows with ``model``, ``seed``, ``case``, optionally ``patient``, and ``metric``.
            Non-finite metric values are dropped.
        metric: column to aggregate, e.g. ``"dice"``.
        by_patient: aggregate per ``patient`` (True), per ``case`` (False), or per patient exactly
            when every row has a non-empty ``patient`` (None).

    Returns:
        ``{model: {seed: {unit: mean}}}``.
    """
    if by_patient is None:
        by_patient = bool(per_image) and all(str(r.get("patient") or "") != "" for r in per_image)
    key = "patient" if by_patient else "case"
    sums: dict[str, dict[Any, dict[str, list[float]]]] = {}
    for row in per_image:
        value = float(row[metric])
        if not math.isfinite(value):
            continue
        sums.setdefault(str(row["model"]), {}).setdefault(row["seed"], {}).setdefault(
            str(row[key]), []
        ).append(value)
    return {
        model: {
            seed: {unit: statistics.fmean(v) for unit, v in units.items()} for seed, units in seeds.items()
        }
        for model, seeds in sums.items()
    }


def per_seed_means(table: Mapping[Any, Mapping[str, float]]) -> dict[Any, float]:
    """The mean over units of one model's ``{seed: {unit: value}}`` table, per seed."""
    return {seed: statistics.fmean(units.values()) for seed, units in table.items() if units}


def paired_differences(
    model: Mapping[Any, Mapping[str, float]], reference: Mapping[Any, Mapping[str, float]]
) -> tuple[list[Any], list[str], np.ndarray]:
    """The seeds × units matrix of ``model − reference`` over the seeds and units both have.

    A unit enters only when it is present in every shared seed of both models, so the matrix is
    complete.

    Returns:
        ``(seeds, units, d)`` with ``d`` shaped len(seeds) × len(units) (float64).
    """
    seeds = sorted(set(model) & set(reference), key=str)
    units = sorted(set.intersection(*(set(model[s]) & set(reference[s]) for s in seeds))) if seeds else []
    d = np.array([[model[s][u] - reference[s][u] for u in units] for s in seeds], dtype=np.float64)
    return seeds, units, d.reshape(len(seeds), len(units))


def hierarchical_bootstrap_ci(
    d: np.ndarray, confidence: float = 0.95, n_boot: int = 10000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of a seeds × units difference matrix with a percentile CI from a two-level bootstrap.

    Each replicate draws ``S`` seeds (rows) with replacement, then within every drawn seed ``U``
    units (columns) with replacement, independently per drawn seed, and takes the mean of the drawn
    differences. The CI is the (1 − confidence)/2 and (1 + confidence)/2 quantiles of the
    replicates (numpy's default linear interpolation).

    Args:
        d: S × U matrix, S ≥ 1 seeds, U ≥ 1 units.
        confidence: coverage of the interval, in (0, 1).
        n_boot: number of bootstrap replicates.
        seed: seed of the resampling generator (the CI is reproducible).

    Returns:
        ``(mean, low, high)``; NaNs when ``d`` is empty.
    """
    d = np.asarray(d, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"d must be a seeds × units matrix, got shape {d.shape}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if d.size == 0:
        return math.nan, math.nan, math.nan
    n_seeds, n_units = d.shape
    rng = np.random.default_rng(seed)
    replicates = np.empty(n_boot, dtype=np.float64)
    chunk = max(1, 2_000_000 // max(1, n_seeds * n_units))
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        rows = rng.integers(0, n_seeds, size=(size, n_seeds))
        cols = rng.integers(0, n_units, size=(size, n_seeds, n_units))
        replicates[start : start + size] = d[rows[:, :, None], cols].mean(axis=(1, 2))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(replicates, [alpha, 1.0 - alpha])
    return float(d.mean()), float(low), float(high)


def paired_tests(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sided paired t-test and Wilcoxon signed-rank p-values of ``a`` against ``b``.

    ``a`` and ``b`` are the per-unit means over seeds of two models, in the same unit order. All
    differences zero gives 1.0 for both; fewer than two units gives NaN. The Wilcoxon test uses
    scipy's defaults (zero differences dropped, exact distribution for small samples without ties).
    """
    from scipy.stats import ttest_rel, wilcoxon

    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired samples differ in length: {a_arr.shape} vs {b_arr.shape}")
    if a_arr.size < 2:
        return math.nan, math.nan
    diff = a_arr - b_arr
    if np.allclose(diff, 0.0):
        return 1.0, 1.0
    p_t = float(ttest_rel(a_arr, b_arr).pvalue) if np.ptp(diff) > 0 else 0.0
    p_w = float(wilcoxon(a_arr, b_arr).pvalue)
    return p_t, p_w


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order; NaNs stay NaN and do not count.

    With the m finite p-values sorted ascending, p_(1) ≤ … ≤ p_(m), the adjusted value of p_(i) is
    max over j ≤ i of min(1, (m − j + 1)·p_(j)).
    """
    finite = [(p, i) for i, p in enumerate(p_values) if p is not None and math.isfinite(p)]
    adjusted = [math.nan] * len(p_values)
    m = len(finite)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(finite)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def compare_to_reference(
    per_image: Sequence[Mapping[str, Any]],
    models: Sequence[str],
    reference: str,
    metric: str = "dice",
    by_patient: bool | None = None,
    confidence: float = 0.95,
    n_boot: int = 10000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Every model of ``models`` other than ``reference`` against ``reference`` on ``metric``.

    Returns:
        ``{model: {"units", "seeds_paired", "diff", "ci_low", "ci_high", "p_t", "p_wilcoxon",
        "p_t_holm", "p_wilcoxon_holm", "unit"}}`` where ``unit`` is ``"patient"`` or ``"case"``;
        the reference itself gets an entry of NaNs. Holm's family is the models compared.
    """
    if by_patient is None:
        by_patient = bool(per_image) and all(str(r.get("patient") or "") != "" for r in per_image)
    tables = unit_table(per_image, metric, by_patient)
    ref = tables.get(reference, {})
    out: dict[str, dict[str, Any]] = {}
    for model in models:
        entry: dict[str, Any] = {"unit": "patient" if by_patient else "case", "units": 0, "seeds_paired": 0,
                                 "diff": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                                 "p_t": math.nan, "p_wilcoxon": math.nan}  # fmt: skip
        if model != reference and model in tables and ref:
            seeds, units, d = paired_differences(tables[model], ref)
            entry["units"], entry["seeds_paired"] = len(units), len(seeds)
            if d.size:
                entry["diff"], entry["ci_low"], entry["ci_high"] = hierarchical_bootstrap_ci(
                    d, confidence, n_boot, seed
                )
                a = [statistics.fmean(tables[model][s][u] for s in tables[model] if u in tables[model][s])
                     for u in units]  # fmt: skip
                b = [statistics.fmean(ref[s][u] for s in ref if u in ref[s]) for u in units]
                entry["p_t"], entry["p_wilcoxon"] = paired_tests(a, b)
        out[model] = entry
    others = [m for m in models if m != reference]
    for key in ("p_t", "p_wilcoxon"):
        for model, adjusted in zip(others, holm([out[m][key] for m in others])):
            out[model][f"{key}_holm"] = adjusted
        out.setdefault(reference, {})[f"{key}_holm"] = math.nan
    return out
