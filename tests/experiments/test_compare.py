"""Comparison harness: parsing, recipes, budgets, case identity, statistics, and real runs."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scipy import stats

from litenext_monai.experiments.compare import (
    COMMON_RECIPE,
    MODELS,
    checkpoint_rule,
    compare,
    datalist_test_cases,
    detect_in_channels,
    epochs_for_budget,
    paired_p_value,
    parse_value,
    parse_variant,
    recipe_layers,
    summarise,
)
from litenext_monai.resources import BUNDLE_ROOT

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
            "--n_boot", "200",
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
        assert int(rows[name]["params_train"]) >= int(rows[name]["params_deploy"]) > 0
        assert float(rows[name]["cpu_latency_ms"]) > 0 and float(rows[name]["macs_thop_g"]) > 0
        assert rows[name]["epochs"] == "1" and rows[name]["recipe"] == "own"
    assert (
        rows["lv_unet"]["network"] == "LV-UNet (random init)"
        and rows["lv_unet"]["checkpoint_rule"] == "last epoch"
    )
    assert int(rows["lv_unet"]["params_deploy"]) < int(rows["lv_unet"]["params_train"])
    assert rows["litenext"]["p_value"] == "nan" or rows["litenext"]["p_value"] == ""
    assert 0.0 <= float(rows["cmunext_xxs"]["p_value"]) <= 1.0
    assert 0.0 <= float(rows["cmunext_xxs"]["p_wilcoxon_holm"]) <= 1.0
    assert float(rows["cmunext_xxs"]["dice_ci_low"]) <= float(rows["cmunext_xxs"]["dice_ci_high"])
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
    trained = [r for r in children if "_train_" in r.info.run_name and r.info.status == "FINISHED"]
    assert len(trained) == 4  # one finished training run per trained model × seed, nested under the parent
    assert parent.info.status == "FAILED"


CONFIGS = BUNDLE_ROOT / "configs"


def test_parse_value_and_variant():
    assert parse_value("0.002") == 0.002 and parse_value("[1, 2]") == [1, 2] and parse_value("true") is True
    assert parse_value("False") is False and parse_value("None") is None and parse_value("bce") == "bce"
    spec = parse_variant("litenext_bce=litenext:serp=False,loss#supervised=bce")
    assert spec.name == "litenext_bce" and spec.base == "litenext" and spec.overlay is None
    assert dict(spec.overrides) == {"serp": False, "loss#supervised": "bce"}
    spec = parse_variant("wide=cmunext_xxs:image_size=[64,64],learning_rate=1e-3")
    assert spec.overlay == "cmunext_xxs.json" and dict(spec.overrides) == {
        "image_size": [64, 64],
        "learning_rate": 1e-3,
    }
    for bad in ("nobase", "x=unknown:serp=False", "litenext=litenext:serp=False", "x=litenext:serp"):
        with pytest.raises(ValueError):
            parse_variant(bad)


def _resolved(layers, keys):
    """The raw values of ``keys`` in the layered config, via MONAI's own ConfigParser merging."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(p) for p in layers])
    return {k: json.dumps(parser.get(k), sort_keys=True) for k in keys}


RECIPE_KEYS = (
    "loss",
    "optimizer#_target_",
    "learning_rate",
    "weight_decay",
    "lr_scheduler",
    "train#random_transforms",
    "batch_size",
    "serp",
    "validate#handlers#1#mode",
    "early_stopping",
    "run",
)


def test_common_recipe_differs_only_in_the_network(tmp_path):
    own = {
        m: _resolved(recipe_layers(MODELS[m], "own", CONFIGS, tmp_path), (*RECIPE_KEYS, "network_def"))
        for m in MODELS
    }
    common = {
        m: _resolved(recipe_layers(MODELS[m], "common", CONFIGS, tmp_path), (*RECIPE_KEYS, "network_def"))
        for m in MODELS
    }
    for key in RECIPE_KEYS:
        assert len({common[m][key] for m in MODELS}) == 1, key  # one recipe for all
    assert len({own[m]["loss"] for m in MODELS}) > 1 and len({own[m]["batch_size"] for m in MODELS}) > 1
    for m in MODELS:  # the network is each model's own
        assert common[m]["network_def"] == own[m]["network_def"]
    assert json.loads(common["litenext"]["serp"]) is False and json.loads(own["litenext"]["serp"]) is True
    layers = recipe_layers(MODELS["lv_unet"], "common", CONFIGS, tmp_path)
    assert layers[0].name == "train.json" and layers[-1].name == COMMON_RECIPE
    assert set(json.loads(layers[1].read_text())) == {"_desc_", "network_def"}
    # the papers' batch sizes in the own recipes (baselines spec: CMUNeXt and LV-UNet use 8)
    assert json.loads(own["cmunext_xxs"]["batch_size"]) == 8 and json.loads(own["lv_unet"]["batch_size"]) == 8


def test_checkpoint_rules_read_from_the_config(tmp_path):
    def rule(model, recipe, overrides=None):
        return checkpoint_rule(recipe_layers(MODELS[model], recipe, CONFIGS, tmp_path), overrides or {})

    assert rule("lv_unet", "own") == "last epoch"
    assert rule("litenext", "own") == "best val dice"
    assert rule("mini_net", "own") == "best val dice, early stop after 10 epochs without gain (from epoch 50)"
    assert {rule(m, "common") for m in MODELS} == {"best val dice"}
    assert rule("litenext", "own", {"validate#handlers#1#mode": "last"}) == "last epoch"


def test_epochs_for_budget_by_hand():
    assert epochs_for_budget(60, 5, 10) == 10  # 10 s overhead + 10 × 5 s = 60 s
    assert epochs_for_budget(60, 7, 10) == 7  # 50 / 7 = 7.14
    assert epochs_for_budget(5, 7, 10) == 1  # never fewer than one epoch
    with pytest.raises(ValueError):
        epochs_for_budget(60, 0, 1)


def test_in_channels_come_from_the_data(tmp_path):
    from litenext_monai.data import generate_synthetic_dataset

    grey = generate_synthetic_dataset(tmp_path / "grey", "nuclei", 1, 1, 1, image_size=32).parent
    rgb = generate_synthetic_dataset(tmp_path / "rgb", "lesion", 1, 1, 1, image_size=32).parent
    assert detect_in_channels(grey) == 1 and detect_in_channels(rgb) == 3
    with pytest.raises(FileNotFoundError, match="datalist.json"):
        detect_in_channels(tmp_path)


def test_cases_are_datalist_ids_or_relative_paths_never_basenames(tmp_path):
    datalist = {"training": [], "validation": [], "test": [
        {"image": "a/x.png", "label": "m/a.png"},
        {"image": "b/x.png", "label": "m/b.png"},
        {"image": "c/y.png", "label": "m/c.png", "case_id": "case-7", "patient": "P1"},
    ]}  # fmt: skip
    (tmp_path / "datalist.json").write_text(json.dumps(datalist))
    cases = datalist_test_cases(tmp_path)
    assert cases["a/x.png"].case_id == "a/x.png" and cases["b/x.png"].case_id == "b/x.png"
    assert cases[str((tmp_path / "b/x.png").resolve())].case_id == "b/x.png"
    assert cases["case-7"].patient == "P1" and cases["c/y.png"].case_id == "case-7"
    assert "x.png" not in cases


def test_per_image_saver_writes_the_datalist_case_id(tmp_path):
    from ignite.engine import Engine
    from monai.data import MetaTensor

    from litenext_monai.engines.metrics import PerImageMetricsSaver

    mask = torch.zeros(1, 8, 8)
    mask[0, 2:5, 2:5] = 1

    def step(engine, batch):
        return [{"pred": MetaTensor(mask.clone(), meta={"filename_or_obj": f"/d/{i}/img.png"}), "label": mask}
                for i, _ in enumerate(batch)]  # fmt: skip

    engine = Engine(step)
    PerImageMetricsSaver(tmp_path, sigmoid=False).attach(engine)
    engine.run([[{"case_id": "A-1"}, {"other": 1}]], max_epochs=1)
    with (tmp_path / "per_image_metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case_id"] for r in rows] == ["A-1", "/d/1/img.png"]  # the id, else the full path
    assert [r["case"] for r in rows] == ["img.png", "img.png"]


def _tiny_data(tmp_path, size=64):
    from litenext_monai.data import generate_synthetic_dataset

    return generate_synthetic_dataset(tmp_path / "data", "nuclei", 4, 2, 3, image_size=size, seed=1).parent


@pytest.mark.slow
def test_a_rerun_into_the_same_output_never_touches_earlier_runs(tmp_path):
    """Issue 15 review: fixed run names made a rerun re-parent the earlier comparison's runs."""
    from mlflow import MlflowClient

    data, out = _tiny_data(tmp_path), tmp_path / "cmp"
    kwargs = dict(batch_size=2, recipe="common", n_boot=200)
    assert compare(data, ["cmunext_xxs"], 1, 1, 64, out, **kwargs) == 0
    first = json.loads((out / "summary.json").read_text())["parent_run_id"]
    client = MlflowClient(f"sqlite:///{out / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("litenext_compare").experiment_id

    def children(parent):
        return sorted(r.info.run_id for r in client.search_runs([experiment])
                      if r.data.tags.get("mlflow.parentRunId") == parent)  # fmt: skip

    before = children(first)
    assert len(before) == 2  # train + evaluate
    assert compare(data, ["cmunext_xxs"], 1, 1, 64, out, **kwargs) == 0
    second = json.loads((out / "summary.json").read_text())["parent_run_id"]
    assert second != first
    assert children(first) == before  # untouched by the rerun
    assert len(children(second)) == 2 and not set(children(second)) & set(before)
    with (out / "comparison.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["recipe"] == "common" and row["checkpoint_rule"] == "best val dice" and row["epochs"] == "1"
    assert row["batch_size"] == "2" and row["network"] == "CMUNeXt-XXS"


@pytest.mark.slow
@pytest.mark.timing
def test_equal_time_budget_gives_every_model_its_share(tmp_path):
    from litenext_monai.data import generate_synthetic_dataset

    budget_min = 0.4
    # Epochs of several batches: per-epoch bookkeeping (validation, checkpoint saves) stays a small
    # part of an epoch, so the calibrated epoch time holds for the whole run.
    data = generate_synthetic_dataset(tmp_path / "data", "nuclei", 32, 4, 3, image_size=64, seed=1).parent
    out = tmp_path / "cmp"
    failed = compare(data, ["cmunext_xxs", "monai_unet"], 1, None, 64, out, batch_size=8, recipe="common",
                     time_budget_min=budget_min, n_boot=200)  # fmt: skip
    assert failed == 0
    with (out / "comparison.csv").open() as handle:
        rows = {r["model"]: r for r in csv.DictReader(handle)}
    for model, row in rows.items():
        trained = float(row["train_s"])  # MLflow run start -> last validation
        assert abs(trained - budget_min * 60) <= 0.25 * budget_min * 60, (model, trained, row["epochs"])
        assert float(row["train_wall_s"]) > trained
        assert int(row["epochs"]) >= 1 and float(row["epoch_s"]) > 0
    settings = (out / "comparison.md").read_text().splitlines()[0]
    assert f"time budget {budget_min:g} min" in settings and "recipe common" in settings
