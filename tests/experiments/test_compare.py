"""Comparison harness: the statistics against hand computation, and a real run of every model."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from litenext_monai.experiments.compare import MODELS, paired_p_value, summarise

REPO = Path(__file__).resolve().parents[2]


def _rows(model: str, seed: int, dice: list[float]) -> list[dict]:
    return [
        {"model": model, "seed": seed, "case": f"c{i}", "dice": d, "iou": d / (2 - d), "hd95": 10 * (1 - d)}
        for i, d in enumerate(dice)
    ]


def test_paired_p_value_matches_the_t_distribution_by_hand():
    a, b = [0.9, 0.8, 0.85, 0.7, 0.95], [0.85, 0.7, 0.86, 0.6, 0.9]
    diff = [x - y for x, y in zip(a, b)]
    n = len(diff)
    mean = sum(diff) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diff) / (n - 1))
    t = mean / (sd / math.sqrt(n))
    expected = 2 * stats.t.sf(abs(t), df=n - 1)
    assert paired_p_value(a, b) == pytest.approx(expected, rel=1e-9)
    assert paired_p_value(a, a) == 1.0
    assert math.isnan(paired_p_value([0.5], [0.4]))


def test_summary_uses_seed_averaged_cases_and_seed_level_spread():
    per_image = (
        _rows("a", 0, [0.9, 0.8, 0.7]) + _rows("a", 1, [0.7, 0.8, 0.9])
        + _rows("b", 0, [0.5, 0.6, 0.4]) + _rows("b", 1, [0.6, 0.5, 0.7])
    )  # fmt: skip
    table = {r["model"]: r for r in summarise(per_image, ["a", "b"])}
    # seed means: a 0.8, 0.8; b 0.5, 0.6
    assert table["a"]["dice_mean"] == pytest.approx(0.8) and table["a"]["dice_sd"] == pytest.approx(0.0)
    assert table["b"]["dice_mean"] == pytest.approx(0.55)
    assert table["b"]["dice_sd"] == pytest.approx(math.sqrt(((0.5 - 0.55) ** 2 + (0.6 - 0.55) ** 2) / 1))
    # seed-averaged cases: a = [0.8, 0.8, 0.8], b = [0.55, 0.55, 0.55] -> constant differences
    a_cases, b_cases = [0.8, 0.8, 0.8], [0.55, 0.55, 0.55]
    assert table["b"]["p_value"] == pytest.approx(paired_p_value(b_cases, a_cases), nan_ok=True)
    assert math.isnan(table["a"]["p_value"])
    assert table["a"]["seeds"] == 2 and table["a"]["cases"] == 3


@pytest.mark.slow
def test_every_model_trains_and_a_failing_one_is_reported(tmp_path):
    from litenext_monai.data import generate_synthetic_dataset

    data = generate_synthetic_dataset(tmp_path / "data", "nuclei", 4, 2, 3, image_size=128, seed=1).parent
    out = tmp_path / "cmp"
    proc = subprocess.run(
        [
            sys.executable, str(REPO / "scripts" / "compare.py"), "--dataset_dir", str(data),
            "--models", ",".join(MODELS), "--seeds", "1", "--epochs", "1", "--image_size", "128",
            "--batch_size", "2", "--output", str(out), "--set", "monai_unet.max_epochs=not_a_number",
        ],
        capture_output=True, text=True, timeout=900, env={"OMP_NUM_THREADS": "1", **__import__("os").environ},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "monai_unet" in proc.stderr
    with (out / "comparison.csv").open() as handle:
        rows = {r["model"]: r for r in csv.DictReader(handle)}
    assert set(rows) == set(MODELS)
    assert rows["monai_unet"]["status"] != "ok"
    for name in ("litenext", "cmunext_xxs", "mini_net", "lv_unet"):
        assert rows[name]["status"] == "ok", rows[name]
        assert 0.0 <= float(rows[name]["dice_mean"]) <= 1.0
        assert int(rows[name]["parameters"]) > 0 and float(rows[name]["cpu_latency_ms"]) > 0
    assert rows["litenext"]["p_value"] == "nan" or rows["litenext"]["p_value"] == ""
    assert 0.0 <= float(rows["cmunext_xxs"]["p_value"]) <= 1.0
    with (out / "per_image.csv").open() as handle:
        per_image = list(csv.DictReader(handle))
    assert {r["model"] for r in per_image} == {"litenext", "cmunext_xxs", "mini_net", "lv_unet"}
    assert len(per_image) == 4 * 3  # 4 trained models × 3 test cases × 1 seed
    assert (out / "comparison.md").read_text().count("|") > 20
    assert all((out / f"boxplot_{m}.png").is_file() for m in ("dice", "iou", "hd95"))
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("litenext_compare")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    trained = [r for r in children if r.info.run_name.endswith("_train") and r.info.status == "FINISHED"]
    assert len(trained) == 4  # one finished training run per trained model × seed, nested under the parent
    assert parent.info.status == "FAILED"
