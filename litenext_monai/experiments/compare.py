"""Paper-style comparison of segmentation networks trained through the same bundle.

Every model × seed is trained with ``python -m monai.bundle run`` (``train.json`` plus the model's
recipe overlay) on one datalist, then evaluated on its test split with ``evaluate.json``. The
per-image test metrics are pooled into one table; each model gets the mean ± sd of Dice, IoU and
HD95, its parameter count, conv/linear MACs and CPU latency, and the two-sided paired t-test
p-value (:func:`scipy.stats.ttest_rel`) of its seed-averaged per-image Dice against the first
model's, over the test cases. Training and evaluation runs are MLflow runs nested under one
parent run. A model that fails is reported and the others go on.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from litenext_monai.experiments.launcher import BundleLauncher
from litenext_monai.resources import BUNDLE_ROOT

__all__ = ["MODELS", "ModelSpec", "compare", "summarise", "paired_p_value", "write_tables"]

logger = logging.getLogger(__name__)

BUNDLE = BUNDLE_ROOT
METRICS = ("dice", "iou", "hd95", "precision", "recall", "f1")
#: Metrics summarised in the comparison table (mean ± sd over seeds).
TABLE_METRICS = ("dice", "iou", "hd95")


@dataclass(frozen=True)
class ModelSpec:
    """A model of the comparison: its bundle overlay and command-line overrides."""

    name: str
    label: str
    overlay: str | None = None
    overrides: Mapping[str, str] = field(default_factory=dict)


#: The models ``--models`` can name: LiteNeXt (the bundle's own recipe, SeRP + MWL + Dice) and the
#: seed papers' baselines with their recipes, plus MONAI's UNet as a widely used reference.
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("litenext", "LiteNeXt"),
        ModelSpec("cmunext_xxs", "CMUNeXt-XXS", "cmunext_xxs.json"),
        ModelSpec("mini_net", "Mini-Net", "mini_net.json"),
        ModelSpec("lv_unet", "LV-UNet", "lv_unet.json"),
        ModelSpec("monai_unet", "MONAI UNet 16-256 res2", "monai_unet.json"),
    )
}


def _bundle_cmd(configs: Sequence[Path], overrides: Mapping[str, Any], tracking: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr([str(c) for c in configs])]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    if tracking is not None:
        cmd += ["--tracking", str(tracking)]
    return cmd


def _run(cmd: list[str], log_path: Path, launcher: BundleLauncher) -> None:
    """Run one bundle command, its output into ``log_path``; raise with the log's tail on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    log_path.write_text("$ " + " ".join(cmd) + "\n", encoding="utf-8")
    code = launcher.run(cmd, stdout=log_path, env=env)
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"exit code {code} (log: {log_path}): " + " | ".join(tail))


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def paired_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided paired t-test p-value of ``a`` against ``b`` (same cases, same order); NaN if undefined."""
    from scipy.stats import ttest_rel

    if len(a) != len(b) or len(a) < 2:
        return math.nan
    if np.allclose(np.asarray(a) - np.asarray(b), 0.0):
        return 1.0
    return float(ttest_rel(a, b).pvalue)


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def summarise(per_image: Sequence[Mapping[str, Any]], models: Sequence[str]) -> list[dict[str, Any]]:
    """Per model: mean ± sd over seeds of the per-seed test means, and the paired p-value vs ``models[0]``.

    Args:
        per_image: rows with ``model, seed, case`` and the metrics of :data:`METRICS`.
        models: the model names in table order; the first is the reference of the t-test.
    """
    table = []
    seed_avg: dict[str, dict[str, float]] = {}
    for model in models:
        rows = [r for r in per_image if r["model"] == model]
        by_case: dict[str, list[float]] = {}
        for r in rows:
            by_case.setdefault(r["case"], []).append(float(r["dice"]))
        seed_avg[model] = {case: statistics.fmean(v) for case, v in by_case.items()}
        entry: dict[str, Any] = {
            "model": model,
            "seeds": len({r["seed"] for r in rows}),
            "cases": len(by_case),
        }
        for metric in TABLE_METRICS:
            per_seed = {}
            for r in rows:
                per_seed.setdefault(r["seed"], []).append(float(r[metric]))
            means = [statistics.fmean(v) for v in per_seed.values() if v]
            entry[f"{metric}_mean"], entry[f"{metric}_sd"] = _mean_sd(means)
        table.append(entry)
    reference = seed_avg.get(models[0], {}) if models else {}
    for entry in table:
        if entry["model"] == models[0]:
            entry["p_value"] = math.nan
            continue
        cases = sorted(set(reference) & set(seed_avg[entry["model"]]))
        entry["p_value"] = paired_p_value(
            [seed_avg[entry["model"]][c] for c in cases], [reference[c] for c in cases]
        )
    return table


def _fmt(value: float, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _fmt_p(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"


def write_tables(table: Sequence[Mapping[str, Any]], out: Path, settings: str) -> None:
    """Write ``comparison.csv`` (every number) and ``comparison.md`` (the paper-style table)."""
    columns = [
        "model", "label", "status", "seeds", "cases",
        *(f"{m}_{s}" for m in TABLE_METRICS for s in ("mean", "sd")),
        "p_value", "parameters", "macs_g", "cpu_latency_ms",
    ]  # fmt: skip
    with (out / "comparison.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in table:
            writer.writerow(row)
    lines = [
        settings,
        "",
        "| model | Dice | IoU | HD95 (px) | p (Dice vs first) | parameters | MACs | CPU latency (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        if r.get("status", "ok") != "ok":
            lines.append(f"| {r['label']} | failed: {r['status']} | | | | | | |")
            continue
        lines.append(
            f"| {r['label']} | {_fmt(r['dice_mean'])} ± {_fmt(r['dice_sd'])} | {_fmt(r['iou_mean'])} ± "
            f"{_fmt(r['iou_sd'])} | {_fmt(r['hd95_mean'], 1)} ± {_fmt(r['hd95_sd'], 1)} | {_fmt_p(r['p_value'])} | "
            f"{r['parameters']:,} | {_fmt(r['macs_g'], 3)} G | {_fmt(r['cpu_latency_ms'], 1)} |"
        )
    (out / "comparison.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _box_plots(
    per_image: Sequence[Mapping[str, Any]], models: Sequence[str], labels: Mapping[str, str], out: Path
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for metric in TABLE_METRICS:
        data, names = [], []
        for model in models:
            by_case: dict[str, list[float]] = {}
            for r in per_image:
                if r["model"] == model and math.isfinite(float(r[metric])):
                    by_case.setdefault(r["case"], []).append(float(r[metric]))
            if by_case:
                data.append([statistics.fmean(v) for v in by_case.values()])
                names.append(labels[model])
        if not data:
            continue
        fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(data), 4))
        ax.boxplot(data)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right")
        ax.set_ylabel(f"test {metric} per image (mean over seeds)")
        fig.tight_layout()
        path = out / f"boxplot_{metric}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _costs(
    checkpoints: Mapping[str, Path], image_size: int, threads: int = 2, rounds: int = 3, repeats: int = 10
) -> dict[str, tuple[int, float, float]]:
    """Per model: parameters (training form), conv/linear GMACs, and CPU latency in ms.

    Latency is batch 1 in the deploy form (:func:`~litenext_monai.networks.reparameterize`),
    ``threads`` intra-op threads, measured in interleaved rounds (every model once per round) so a
    load change on the machine hits every model alike: the median over rounds of each round's median.
    """
    from litenext_monai.inference import load_network_from_checkpoint
    from litenext_monai.networks import count_macs, count_parameters, reparameterize

    networks, inputs, counts = {}, {}, {}
    for model, checkpoint in checkpoints.items():
        network, settings = load_network_from_checkpoint(str(checkpoint), device="cpu", deploy=False)
        shape = (1, int(settings["in_channels"]), image_size, image_size)
        counts[model] = (count_parameters(network), count_macs(network, shape) / 1e9)
        networks[model], inputs[model] = reparameterize(network).eval(), torch.rand(*shape)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    medians: dict[str, list[float]] = {m: [] for m in networks}
    try:
        with torch.inference_mode():
            for model in networks:  # warm-up
                for _ in range(3):
                    networks[model](inputs[model])
            for _ in range(rounds):
                for model, network in networks.items():
                    times = []
                    for _ in range(repeats):
                        start = time.perf_counter()
                        network(inputs[model])
                        times.append((time.perf_counter() - start) * 1e3)
                    medians[model].append(statistics.median(times))
    finally:
        torch.set_num_threads(previous)
    return {m: (*counts[m], statistics.median(medians[m])) for m in networks}


def _nest_under(client: Any, parent_id: str, experiment_id: str, run_name: str) -> None:
    runs = client.search_runs([experiment_id], f"attributes.run_name = '{run_name}'")
    for run in runs:
        client.set_tag(run.info.run_id, "mlflow.parentRunId", parent_id)


def compare(
    dataset_dir: Path,
    models: Sequence[str],
    seeds: int,
    epochs: int,
    image_size: int,
    output: Path,
    batch_size: int = 8,
    in_channels: int = 1,
    modality: str = "rgb",
    extra: Mapping[str, Mapping[str, str]] | None = None,
    tracking_uri: str | None = None,
    fresh_processes: bool = False,
) -> int:
    """Train and evaluate every model × seed, write the tables and plots; return the number of failures.

    Args:
        dataset_dir: folder with ``datalist.json`` (training/validation/test splits).
        models: names from :data:`MODELS`; the first is the reference of the t-tests.
        seeds: seeds 0 … seeds − 1 per model.
        epochs: training epochs of every run.
        image_size: square training size (a multiple of 128 serves every model).
        output: result folder (created); runs go to ``output/runs/<model>/seed<k>/``.
        batch_size: training batch size of every run.
        in_channels, modality: how images are loaded (``modality`` as in the bundle).
        extra: per-model overrides, e.g. ``{"litenext": {"learning_rate": "0.002"}}``.
        tracking_uri: MLflow store (default: ``sqlite:///<output>/mlruns.db``).
        fresh_processes: start every bundle command as a new Python process instead of forking it
            from a fork server that has imported MONAI once (:class:`BundleLauncher`).
    """
    from mlflow import MlflowClient

    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {sorted(MODELS)}")
    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    configs = BUNDLE / "configs"
    launcher = BundleLauncher(fresh=fresh_processes)
    settings_file = configs / "mlflow_settings.json"
    uri = tracking_uri or f"sqlite:///{output / 'mlruns.db'}"
    experiment = "litenext_compare"
    client = MlflowClient(uri)
    experiment_id = (
        client.get_experiment_by_name(experiment)
        or client.get_experiment(
            client.create_experiment(experiment, artifact_location=(output / "mlartifacts").as_uri())
        )
    ).experiment_id
    parent = client.create_run(experiment_id, run_name=f"compare_{time.strftime('%Y%m%d_%H%M%S')}")
    parent_id = parent.info.run_id
    client.log_param(parent_id, "models", ",".join(models))
    for key, value in {"seeds": seeds, "epochs": epochs, "image_size": image_size, "batch_size": batch_size,
                       "dataset_dir": str(Path(dataset_dir).resolve())}.items():  # fmt: skip
        client.log_param(parent_id, key, value)

    per_image: list[dict[str, Any]] = []
    status: dict[str, str] = {}
    checkpoints: dict[str, Path] = {}
    started = time.monotonic()
    for model in models:
        spec = MODELS[model]
        layers = [configs / "train.json"] + ([configs / spec.overlay] if spec.overlay else [])
        status[model] = "ok"
        for seed in range(seeds):
            run_dir = output / "runs" / model / f"seed{seed}"
            common = {
                "bundle_root": BUNDLE,
                "dataset_dir": Path(dataset_dir).resolve(),
                "output_dir": f"$'{run_dir.as_posix()}'",
                "ckpt_dir": run_dir / "models",
                "image_size": f"[{image_size},{image_size}]",
                "in_channels": in_channels,
                "modality": modality,
                "seed": seed,
                "progress_bar": False,
                "tracking_uri": uri,
                "experiment_name": experiment,
            }
            # The model's own overrides, then the user's, win over the harness settings.
            mine = {**dict(spec.overrides), **dict((extra or {}).get(model, {}))}
            train_name, eval_name = f"{model}_seed{seed}_train", f"{model}_seed{seed}_evaluate"
            try:
                try:
                    _run(
                        _bundle_cmd(layers, {**common, "max_epochs": epochs, "batch_size": batch_size,
                                             "run_name": train_name, **mine}, settings_file),
                        run_dir / "train.log",
                        launcher,
                    )  # fmt: skip
                    _run(
                        _bundle_cmd([*layers, configs / "evaluate.json"],
                                    {**common, "run_name": eval_name, **mine}, settings_file),
                        run_dir / "evaluate.log",
                        launcher,
                    )  # fmt: skip
                finally:
                    # Runs of a failed command are nested too, so the parent shows what happened.
                    for name in (train_name, eval_name):
                        _nest_under(client, parent_id, experiment_id, name)
                (csv_path,) = sorted(run_dir.glob(f"{eval_name}/per_image_metrics.csv")) or [None]
                if csv_path is None:
                    raise RuntimeError(f"no per_image_metrics.csv under {run_dir / eval_name}")
                for row in _read_rows(csv_path):
                    per_image.append({"model": model, "seed": seed, "case": row["case"],
                                      **{m: float(row[m]) for m in METRICS}})  # fmt: skip
                checkpoints[model] = run_dir / "models" / "model.pt"
            except (RuntimeError, ValueError, OSError) as err:
                status[model] = str(err)
                logger.error("%s, seed %d failed: %s", model, seed, err)
                print(f"FAILED {model} seed {seed}: {err}", file=sys.stderr, flush=True)
                per_image = [r for r in per_image if r["model"] != model]
                break
    wall_minutes = (time.monotonic() - started) / 60

    with (output / "per_image.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["model", "seed", "case", *METRICS], lineterminator="\n")
        writer.writeheader()
        writer.writerows(per_image)
    ok = [m for m in models if status[m] == "ok"]
    table = summarise(per_image, ok) if ok else []
    rows = {r["model"]: r for r in table}
    costs = _costs({m: checkpoints[m] for m in ok}, image_size)
    final = []
    for model in models:
        row = {"model": model, "label": MODELS[model].label, "status": status[model], **rows.get(model, {})}
        if status[model] == "ok":
            row["parameters"], row["macs_g"], row["cpu_latency_ms"] = costs[model]
        final.append(row)
    settings = (
        f"{seeds} seed(s) × {epochs} epochs, {image_size}×{image_size}, batch {batch_size}, "
        f"dataset {Path(dataset_dir).name}; mean ± sd over seeds of the test-split mean; p: two-sided paired "
        f"t-test over test cases of the seed-averaged per-image Dice against {MODELS[models[0]].label}; "
        f"MACs: conv/linear at 1×{in_channels}×{image_size}²; latency: batch 1, 2 threads, deploy form, median of 3 "
        f"interleaved rounds; "
        f"wall time {wall_minutes:.1f} min."
    )
    write_tables(final, output, settings)
    plots = _box_plots(per_image, ok, {m: MODELS[m].label for m in models}, output)
    for path in [output / "comparison.csv", output / "comparison.md", output / "per_image.csv", *plots]:
        client.log_artifact(parent_id, str(path))
    client.log_metric(parent_id, "failed_models", len(models) - len(ok))
    client.set_terminated(parent_id, "FINISHED" if len(ok) == len(models) else "FAILED")
    (output / "summary.json").write_text(
        json.dumps({"status": status, "wall_minutes": wall_minutes}, indent=2)
    )
    return len(models) - len(ok)
