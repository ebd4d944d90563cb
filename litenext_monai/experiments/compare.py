"""Comparison of segmentation networks trained through the same bundle, with honest statistics.

Every model × seed is trained with ``python -m monai.bundle run`` on one datalist, then evaluated on
its test split with ``evaluate.json`` (deploy form). Two recipe modes:

* ``recipe="own"``: each paper's recipe, ``train.json`` + the model's overlay
  (``configs/<model>.json``; LiteNeXt is ``train.json`` itself);
* ``recipe="common"``: ``train.json`` + a network-only overlay (the model overlay's ``network_def``,
  written to ``<output>/recipes/<model>_network.json``) + ``configs/common_recipe.json``: one loss,
  optimiser, LR schedule, augmentation, batch size and checkpoint rule for every model, no SeRP,
  so only the architecture differs.

Variants (:func:`parse_variant`) are a base model plus bundle overrides, for ablations. With a time
budget every model is first calibrated (a 4-epoch training run) and then trained for the number of
epochs that fits the budget (:func:`epochs_for_budget`); the bundle's LR schedules follow
``max_epochs``.

The per-image test metrics are pooled into one table (mean ± sd over seeds of the per-seed test
means) and every model is compared with the reference model by :mod:`.stats`: the paired
difference with a hierarchical-bootstrap 95 % CI over seeds and cases, and Wilcoxon and paired-t
p-values on the per-case means over seeds, Holm-adjusted over the models compared. Cases are the
datalist's case ids, aggregated per patient when the datalist has patients. Training and
evaluation runs are MLflow runs with names unique to this comparison, nested under one parent
run, so a rerun into the same output never touches earlier runs. A model that fails is reported
and the others go on.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import secrets
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from litenext_monai.experiments.launcher import BundleLauncher
from litenext_monai.resources import BUNDLE_ROOT

__all__ = [
    "MODELS",
    "RECIPES",
    "ModelSpec",
    "compare",
    "summarise",
    "paired_p_value",
    "write_tables",
    "parse_variant",
    "parse_value",
    "detect_in_channels",
    "recipe_layers",
    "epochs_for_budget",
    "datalist_test_cases",
]

logger = logging.getLogger(__name__)

BUNDLE = BUNDLE_ROOT
METRICS = ("dice", "iou", "hd95", "precision", "recall", "f1")
#: Metrics summarised in the comparison table (mean ± sd over seeds).
TABLE_METRICS = ("dice", "iou", "hd95")
#: Recipe modes: each paper's own recipe, or one common recipe for every model.
RECIPES = ("own", "common")
COMMON_RECIPE = "common_recipe.json"
#: Epochs of the calibration run that measures a model's epoch time for ``time_budget_min``.
CALIBRATION_EPOCHS = 4
EXPERIMENT = "litenext_compare"


@dataclass(frozen=True)
class ModelSpec:
    """A model of the comparison: its bundle overlay and bundle overrides.

    Attributes:
        name: the name used in ``--models`` and in the output folders.
        label: the table label.
        overlay: the model's own-recipe overlay in ``configs/`` (``None``: ``train.json`` itself).
        overrides: bundle config ids → values (JSON-like Python values), applied after the layers.
        base: for a variant, the model it derives from.
    """

    name: str
    label: str
    overlay: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    base: str | None = None


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


# ----------------------------------------------------------------------------------------------- parsing


def parse_value(text: str) -> Any:
    """A command-line value: JSON where it parses (``0.002``, ``[1,2]``, ``"x"``, ``true``), Python's
    ``True``/``False``/``None`` as such, anything else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return {"True": True, "False": False, "None": None}.get(text, text)


def _split_assignments(text: str) -> list[str]:
    """Split ``k=v,k2=[1,2],k3=x`` at the commas that start a new ``key=`` (not inside brackets/quotes)."""
    parts, depth, quote, current = [], 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return [p for p in (p.strip() for p in parts) if p]


def parse_variant(text: str, models: Mapping[str, ModelSpec] = MODELS) -> ModelSpec:
    """``NAME=BASE:key=value,...`` → a :class:`ModelSpec` deriving from ``BASE``.

    Keys are bundle config ids (``#`` for nesting, e.g. ``loss#supervised``); values are parsed by
    :func:`parse_value`. Example: ``litenext_bce=litenext:serp=False,loss#supervised=bce``.

    Raises:
        ValueError: malformed text, an unknown base, a name already taken, or an empty key.
    """
    name, sep, rest = text.partition("=")
    base, colon, assignments = rest.partition(":")
    name, base = name.strip(), base.strip()
    if not sep or not name or not base:
        raise ValueError(f"--variant {text!r}: expected NAME=BASE:key=value,... (e.g. "
                         "litenext_bce=litenext:serp=False,loss#supervised=bce)")  # fmt: skip
    if not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"--variant {text!r}: NAME must be letters, digits, '_' or '-'")
    if base not in models:
        raise ValueError(f"--variant {text!r}: unknown base {base!r}; choose from {sorted(models)}")
    if name in models:
        raise ValueError(f"--variant {text!r}: the name {name!r} is already a model")
    overrides: dict[str, Any] = dict(models[base].overrides)
    for item in _split_assignments(assignments) if colon else []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--variant {text!r}: {item!r} is not key=value")
        overrides[key.strip()] = parse_value(value.strip())
    spec = models[base]
    return ModelSpec(name, name, spec.overlay, overrides, base=spec.base or base)


# ------------------------------------------------------------------------------------------------- data


def _load_datalist(dataset_dir: Path) -> dict[str, Any]:
    path = Path(dataset_dir) / "datalist.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no datalist (expected training/validation/test splits)") from None
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from None


def detect_in_channels(dataset_dir: Path) -> int:
    """Input channels of the data: 3 when the first training image is colour (RGB stays RGB), else 1.

    Raises:
        ValueError: no training items, or an unreadable first image (the message names the file).
    """
    from litenext_monai.io.reader import read_image

    datalist = _load_datalist(dataset_dir)
    items = datalist.get("training") or []
    if not items:
        raise ValueError(f"{Path(dataset_dir) / 'datalist.json'}: no 'training' items")
    first = items[0]["image"] if isinstance(items[0], dict) else items[0]
    path = Path(first) if Path(first).is_absolute() else Path(dataset_dir) / first
    array, _ = read_image(path)
    return 3 if array.ndim == 3 and array.shape[-1] >= 3 else 1


@dataclass(frozen=True)
class CaseIdentity:
    """Identity of one test item: the case id and the patient (``""`` when the datalist has none)."""

    case_id: str
    patient: str


def datalist_test_cases(dataset_dir: Path) -> dict[str, CaseIdentity]:
    """The test split's cases, keyed by every name a per-image CSV may give them.

    A case is identified by its datalist ``case_id`` (or ``id``) key, falling back to the image path
    relative to ``dataset_dir`` (never the basename, which can collide). Keys: the case id, the
    relative image path and the resolved absolute image path.
    """
    from litenext_monai.engines.metrics import CASE_ID_KEYS

    dataset_dir = Path(dataset_dir).resolve()
    cases: dict[str, CaseIdentity] = {}
    for item in _load_datalist(dataset_dir).get("test") or []:
        image = item["image"] if isinstance(item, dict) else str(item)
        absolute = Path(image) if Path(image).is_absolute() else dataset_dir / image
        absolute = absolute.resolve()
        try:
            relative = absolute.relative_to(dataset_dir).as_posix()
        except ValueError:
            relative = absolute.as_posix()
        case_id = next(
            (str(item[k]) for k in CASE_ID_KEYS if isinstance(item, dict) and item.get(k)), relative
        )
        case = CaseIdentity(case_id, str(item.get("patient") or "") if isinstance(item, dict) else "")
        for key in (case_id, relative, str(absolute)):
            cases[key] = case
    return cases


# ---------------------------------------------------------------------------------------------- recipes


def _network_overlay(spec: ModelSpec, configs: Path, folder: Path) -> Path | None:
    """A file holding only the ``network_def`` of ``spec``'s own overlay (``None`` for ``train.json``'s)."""
    if spec.overlay is None:
        return None
    own = json.loads((configs / spec.overlay).read_text(encoding="utf-8"))
    if "network_def" not in own:
        raise ValueError(f"{configs / spec.overlay}: no network_def to take into the common recipe")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}_network.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"_desc_": f"network_def of {spec.overlay} (generated by litenext-compare)",
                               "network_def": own["network_def"]}, indent=2) + "\n", encoding="utf-8")  # fmt: skip
    os.replace(tmp, path)
    return path


def recipe_layers(spec: ModelSpec, recipe: str, configs: Path, folder: Path) -> list[Path]:
    """The bundle config files of ``spec`` under ``recipe`` (``"own"`` or ``"common"``), in order.

    ``folder`` receives the generated network-only overlay of the common recipe.
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    layers = [configs / "train.json"]
    if recipe == "own":
        return layers + ([configs / spec.overlay] if spec.overlay else [])
    network = _network_overlay(spec, configs, folder)
    return layers + ([network] if network else []) + [configs / COMMON_RECIPE]


def checkpoint_rule(layers: Sequence[Path], overrides: Mapping[str, Any]) -> str:
    """The checkpoint rule the layered config defines, in words (read from the raw config)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(p) for p in layers])
    for key, value in overrides.items():
        parser[key] = value
    try:
        mode = parser.get("validate#handlers#1#mode", "max")
        metric = parser.get("validate#key_metric_name", "val_mean_dice")
    except (KeyError, IndexError, TypeError):
        return "?"
    rule = "last epoch" if mode == "last" else f"best {str(metric).replace('val_mean_', 'val ')}"
    if parser.get("early_stopping", None) is not None:
        patience = parser.get("lr_schedule#early_stopping_patience_epochs", None)
        if patience is None:
            patience = parser.get("lr_schedule#early_stopping_patience", "?")
        rule += f", early stop after {patience} epochs without gain"
        if parser.get("lr_schedule#early_stopping_min_epochs", None) is not None:
            try:
                rule += f" (from epoch {parser.get_parsed_content('lr_schedule#early_stopping_min_epochs')})"
            except Exception:  # noqa: BLE001 - a description only: an unparsable expression is left out
                pass
    return rule


def epochs_for_budget(budget_s: float, epoch_s: float, overhead_s: float) -> int:
    """Epochs whose training time (``overhead_s + epochs · epoch_s``) comes closest to ``budget_s``; ≥ 1.

    In :func:`compare` ``overhead_s`` is the first epoch's extra time (warm-up), measured by the
    calibration run.
    """
    if epoch_s <= 0 or not math.isfinite(epoch_s):
        raise ValueError(f"epoch time must be positive, got {epoch_s}")
    return max(1, int(round((budget_s - max(0.0, overhead_s)) / epoch_s)))


# ----------------------------------------------------------------------------------------------- running


def _bundle_cmd(configs: Sequence[Path], overrides: Mapping[str, Any], tracking: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr([str(c) for c in configs])]
    for key, value in overrides.items():
        cmd += [f"--{key}", value if isinstance(value, str) else repr(value) if not isinstance(value, Path)
                else str(value)]  # fmt: skip
    if tracking is not None:
        cmd += ["--tracking", str(tracking)]
    return cmd


def _run(cmd: list[str], log_path: Path, launcher: BundleLauncher) -> float:
    """Run one bundle command, its output into ``log_path``; return its wall time in s; raise on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    log_path.write_text("$ " + " ".join(cmd) + "\n", encoding="utf-8")
    start = time.monotonic()
    code = launcher.run(cmd, stdout=log_path, env=env)
    wall = time.monotonic() - start
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"exit code {code} (log: {log_path}): " + " | ".join(tail))
    return wall


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _find_run(client: Any, experiment_id: str, run_name: str) -> Any | None:
    runs = client.search_runs([experiment_id], f"attributes.run_name = '{run_name}'")
    return runs[0] if runs else None


def _training_seconds(client: Any, run: Any) -> float:
    """The budgeted time of a training run: from its MLflow run start (the trainer's ``STARTED``)
    to the last epoch's validation metric, in s; NaN without timestamps."""
    stamps = _epoch_times(client, run.info.run_id)
    return stamps[-1] - run.info.start_time / 1e3 if stamps else math.nan


def _epoch_times(client: Any, run_id: str) -> list[float]:
    """Timestamps (s) of the per-epoch validation metric of a training run, in epoch order."""
    history = client.get_metric_history(run_id, "val_mean_dice")
    return [m.timestamp / 1e3 for m in sorted(history, key=lambda m: (m.step, m.timestamp))]


def _nest_under(client: Any, parent_id: str, experiment_id: str, run_name: str) -> None:
    for run in client.search_runs([experiment_id], f"attributes.run_name = '{run_name}'"):
        client.set_tag(run.info.run_id, "mlflow.parentRunId", parent_id)


# ---------------------------------------------------------------------------------------------- summary


def paired_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided paired t-test p-value of ``a`` against ``b`` (same cases, same order); NaN if undefined."""
    from litenext_monai.experiments.stats import paired_tests

    if len(a) != len(b):
        return math.nan
    return paired_tests(a, b)[0]


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def summarise(
    per_image: Sequence[Mapping[str, Any]],
    models: Sequence[str],
    reference: str | None = None,
    n_boot: int = 10000,
) -> list[dict[str, Any]]:
    """Per model: mean ± sd over seeds of the per-seed test means, and the statistics vs ``reference``.

    Args:
        per_image: rows with ``model, seed, case``, optionally ``patient``, and the metrics of
            :data:`METRICS`.
        models: the model names in table order.
        reference: the model every other is compared with (default ``models[0]``).
        n_boot: bootstrap replicates of the CI.

    Returns:
        One dict per model with ``seeds``, ``cases``, ``<metric>_mean``/``_sd`` and, for Dice,
        ``dice_diff``, ``dice_ci_low``/``_high`` (hierarchical bootstrap, 95 %), ``p_wilcoxon``,
        ``p_t`` and their ``_holm`` versions, ``units``, ``unit``; ``p_value`` is ``p_t`` (kept for
        older readers).
    """
    from litenext_monai.experiments.stats import compare_to_reference, per_seed_means, unit_table

    reference = reference or (models[0] if models else None)
    table = []
    for model in models:
        rows = [r for r in per_image if r["model"] == model]
        entry: dict[str, Any] = {
            "model": model,
            "seeds": len({r["seed"] for r in rows}),
            "cases": len({r["case"] for r in rows}),
        }
        for metric in TABLE_METRICS:
            seeds = unit_table(rows, metric, by_patient=False).get(model, {})
            entry[f"{metric}_mean"], entry[f"{metric}_sd"] = _mean_sd(list(per_seed_means(seeds).values()))
        table.append(entry)
    if reference is not None and models:
        stats = compare_to_reference(per_image, list(models), reference, "dice", n_boot=n_boot)
        for entry in table:
            s = stats.get(entry["model"], {})
            entry.update({
                "reference": reference, "unit": s.get("unit", "case"), "units": s.get("units", 0),
                "dice_diff": s.get("diff", math.nan), "dice_ci_low": s.get("ci_low", math.nan),
                "dice_ci_high": s.get("ci_high", math.nan), "p_wilcoxon": s.get("p_wilcoxon", math.nan),
                "p_wilcoxon_holm": s.get("p_wilcoxon_holm", math.nan), "p_t": s.get("p_t", math.nan),
                "p_t_holm": s.get("p_t_holm", math.nan),
            })  # fmt: skip
            entry["p_value"] = entry["p_t"]
    return table


def _fmt(value: Any, digits: int = 3) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "—"
    return "—" if not math.isfinite(value) else f"{value:.{digits}f}"


def _fmt_p(value: Any) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(value):
        return "—"
    return f"{value:.1e}" if value < 1e-3 else f"{value:.3f}"


def _fmt_int(value: Any) -> str:
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "—"


CSV_COLUMNS = (
    "model", "label", "network", "base", "status", "recipe", "epochs", "train_s", "train_wall_s", "batch_size",
    "checkpoint_rule", "seeds", "cases", "unit", "units",
    *(f"{m}_{s}" for m in TABLE_METRICS for s in ("mean", "sd")),
    "reference", "dice_diff", "dice_ci_low", "dice_ci_high", "p_wilcoxon", "p_wilcoxon_holm", "p_t", "p_t_holm",
    "p_value", "params_train", "params_deploy", "macs_thop_g", "macs_executed_train_g", "macs_executed_deploy_g",
    "cpu_latency_ms", "epoch_s", "warmup_s",
)  # fmt: skip


def write_tables(
    table: Sequence[Mapping[str, Any]], out: Path, settings: str, reference_label: str | None = None
) -> None:
    """Write ``comparison.csv`` (every number, :data:`CSV_COLUMNS`) and ``comparison.md`` (the table)."""
    from litenext_monai.io.atomic import atomic_write

    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n"
            )
            writer.writeheader()
            for row in table:
                writer.writerow(row)

    atomic_write(out / "comparison.csv", write_csv)
    reference = next((r.get("reference") for r in table if r.get("reference")), None)
    ref_label = reference_label or next((r["label"] for r in table if r["model"] == reference), reference)
    lines = [
        settings,
        "",
        f"| model (network evaluated, deploy form) | epochs | Dice | IoU | HD95 (px) | ΔDice vs {ref_label} [95 % CI] "
        "| p Wilcoxon (Holm) | p t (Holm) | params train / deploy | MACs thop / executed deploy | CPU latency (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        if r.get("status", "ok") != "ok":
            lines.append(f"| {r['label']} | failed: {r['status']} | | | | | | | | | |")
            continue
        diff = ("reference" if r["model"] == reference else
                f"{_fmt(r.get('dice_diff'), 3)} [{_fmt(r.get('dice_ci_low'), 3)}, {_fmt(r.get('dice_ci_high'), 3)}]")  # fmt: skip
        lines.append(
            f"| {r['label']} ({r.get('network', '?')}) | {r.get('epochs', '?')} | {_fmt(r['dice_mean'])} ± "
            f"{_fmt(r['dice_sd'])} | {_fmt(r['iou_mean'])} ± {_fmt(r['iou_sd'])} | {_fmt(r['hd95_mean'], 1)} ± "
            f"{_fmt(r['hd95_sd'], 1)} | {diff} | {_fmt_p(r.get('p_wilcoxon'))} ({_fmt_p(r.get('p_wilcoxon_holm'))}) "
            f"| {_fmt_p(r.get('p_t'))} ({_fmt_p(r.get('p_t_holm'))}) | {_fmt_int(r.get('params_train'))} / "
            f"{_fmt_int(r.get('params_deploy'))} | {_fmt(r.get('macs_thop_g'), 3)} G / "
            f"{_fmt(r.get('macs_executed_deploy_g'), 3)} G | {_fmt(r.get('cpu_latency_ms'), 1)} |"
        )
    atomic_write(out / "comparison.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n", encoding="utf-8"))


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
) -> dict[str, dict[str, Any]]:
    """Per model: the network's display name, parameters and MACs in both forms, and CPU latency (ms).

    Counts come from :func:`litenext_monai.networks.utils.complexity_report` at
    1 × in_channels × image_size²: parameters of the training and the deploy form, MACs in the thop
    convention (training form, as the papers count) and as executed (conv/linear, both forms).
    Latency is batch 1 in the deploy form (the form evaluated), ``threads`` intra-op threads,
    measured in interleaved rounds (every model once per round) so a load change on the machine
    hits every model alike: the median over rounds of each round's median.
    """
    from litenext_monai.inference import load_network_from_checkpoint
    from litenext_monai.networks import reparameterize
    from litenext_monai.networks.utils import complexity_report, network_display_name

    networks, inputs, info = {}, {}, {}
    for model, checkpoint in checkpoints.items():
        network, settings = load_network_from_checkpoint(str(checkpoint), device="cpu", deploy=False)
        shape = (1, int(settings["in_channels"]), image_size, image_size)
        report = complexity_report(network, shape)
        info[model] = {
            "network": network_display_name(settings.get("network_def") or network),
            "params_train": report["params_train"],
            "params_deploy": report["params_deploy"],
            "macs_thop_g": report["macs_thop"] / 1e9,
            "macs_executed_train_g": report["macs_executed_train"] / 1e9,
            "macs_executed_deploy_g": report["macs_executed_deploy"] / 1e9,
        }
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
    for model in networks:
        info[model]["cpu_latency_ms"] = statistics.median(medians[model])
    return info


# ----------------------------------------------------------------------------------------------- compare


def _calibrate(
    layers: Sequence[Path],
    overrides: Mapping[str, Any],
    run_dir: Path,
    launcher: BundleLauncher,
    settings_file: Path,
) -> tuple[float, float]:
    """Epoch time and first-epoch warm-up (s) of one model: a :data:`CALIBRATION_EPOCHS`-epoch training run.

    The epoch time is the spacing of the per-epoch validation metric's MLflow timestamps (training
    plus validation of one epoch); the warm-up is how much longer the first epoch took, counted from
    the MLflow run's start (the trainer's ``STARTED`` event). Process start-up, data caching before
    the trainer starts, and the model logging after it are not part of the budget: they do not
    depend on the number of epochs. The run is tracked in its own store under ``run_dir``.
    """
    from mlflow import MlflowClient

    uri = f"sqlite:///{run_dir / 'mlruns.db'}"
    name = f"calibration_{secrets.token_hex(4)}"
    wall = _run(
        _bundle_cmd(layers, {**overrides, "max_epochs": CALIBRATION_EPOCHS, "output_dir": f"$'{run_dir.as_posix()}'",
                             "ckpt_dir": run_dir / "models", "tracking_uri": uri,
                             "experiment_name": "calibration", "run_name": name}, settings_file),
        run_dir / "calibrate.log", launcher,
    )  # fmt: skip
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("calibration")
    run = _find_run(client, experiment.experiment_id, name) if experiment else None
    stamps = _epoch_times(client, run.info.run_id) if run else []
    if len(stamps) >= 2 and stamps[-1] > stamps[0]:
        epoch_s = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
        return epoch_s, max(0.0, stamps[0] - run.info.start_time / 1e3 - epoch_s)
    return wall / CALIBRATION_EPOCHS, 0.0  # no usable timestamps: charge the whole run to its epochs


def compare(
    dataset_dir: Path,
    models: Sequence[str],
    seeds: int,
    epochs: int | None,
    image_size: int,
    output: Path,
    batch_size: int | None = None,
    in_channels: int | None = None,
    modality: str = "rgb",
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    tracking_uri: str | None = None,
    fresh_processes: bool = False,
    recipe: str = "own",
    variants: Sequence[ModelSpec] = (),
    time_budget_min: float | None = None,
    reference: str | None = None,
    n_boot: int = 10000,
) -> int:
    """Train and evaluate every model × seed, write the tables and plots; return the number of failures.

    Args:
        dataset_dir: folder with ``datalist.json`` (training/validation/test splits).
        models: names from :data:`MODELS` or of ``variants``; variants not named are appended.
        seeds: seeds 0 … seeds − 1 per model.
        epochs: training epochs of every run; ``None`` with ``time_budget_min`` (required without).
        image_size: square training size in pixels (a multiple of 128 serves every model).
        output: result folder (created); runs go to ``output/runs/<model>/seed<k>/``.
        batch_size: training batch size of every run; ``None``: the recipe's (the papers' batch sizes
            in ``own`` mode, the common recipe's in ``common`` mode).
        in_channels: input channels; ``None``: from the data (:func:`detect_in_channels`).
        modality: intensity normalisation as in the bundle.
        extra: per-model overrides, e.g. ``{"litenext": {"learning_rate": 0.002}}``; win over all else.
        tracking_uri: MLflow store (default: ``sqlite:///<output>/mlruns.db``).
        fresh_processes: start every bundle command as a new Python process (:class:`BundleLauncher`).
        recipe: ``"own"`` or ``"common"`` (see the module docstring).
        variants: models derived from others (:func:`parse_variant`).
        time_budget_min: training wall time per run, minutes: each model is calibrated and gets the
            epochs that fit (:func:`epochs_for_budget`); overrides ``epochs``.
        reference: the model of the paired comparisons (default ``litenext`` when compared, else the
            first model).
        n_boot: bootstrap replicates of the confidence intervals.
    """
    from mlflow import MlflowClient

    registry = dict(MODELS)
    for spec in variants:
        if spec.name in registry:
            raise ValueError(f"variant name {spec.name!r} is already a model")
        registry[spec.name] = spec
    models = list(dict.fromkeys([*models, *(v.name for v in variants)]))
    unknown = [m for m in models if m not in registry]
    if unknown:
        raise ValueError(f"unknown models {unknown}; choose from {sorted(registry)}")
    if not models:
        raise ValueError("no models to compare")
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    if time_budget_min is None and (epochs is None or epochs < 1):
        raise ValueError("give epochs >= 1 or time_budget_min")
    if time_budget_min is not None and time_budget_min <= 0:
        raise ValueError(f"time_budget_min must be positive, got {time_budget_min}")
    reference = reference or ("litenext" if "litenext" in models else models[0])
    if reference not in models:
        raise ValueError(f"reference {reference!r} is not among the models {models}")
    dataset_dir = Path(dataset_dir).resolve()
    if in_channels is None:
        in_channels = detect_in_channels(dataset_dir)
    cases = datalist_test_cases(dataset_dir)
    output = output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    configs = BUNDLE / "configs"
    launcher = BundleLauncher(fresh=fresh_processes)
    settings_file = configs / "mlflow_settings.json"
    uri = tracking_uri or f"sqlite:///{output / 'mlruns.db'}"
    client = MlflowClient(uri)
    experiment_id = (
        client.get_experiment_by_name(EXPERIMENT)
        or client.get_experiment(
            client.create_experiment(EXPERIMENT, artifact_location=(output / "mlartifacts").as_uri())
        )
    ).experiment_id
    # One tag per comparison makes every run name unique, so nesting by name never finds the runs of
    # an earlier comparison in the same store.
    tag = f"{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}"
    parent = client.create_run(experiment_id, run_name=f"compare_{tag}")
    parent_id = parent.info.run_id
    client.log_param(parent_id, "models", ",".join(models))
    for key, value in {"seeds": seeds, "epochs": epochs, "image_size": image_size, "batch_size": batch_size,
                       "in_channels": in_channels, "recipe": recipe, "time_budget_min": time_budget_min,
                       "reference": reference, "dataset_dir": str(dataset_dir)}.items():  # fmt: skip
        client.log_param(parent_id, key, value)

    per_image: list[dict[str, Any]] = []
    status: dict[str, str] = {}
    checkpoints: dict[str, Path] = {}
    runs: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    for model in models:
        spec = registry[model]
        status[model] = "ok"
        info: dict[str, Any] = {"epochs": [], "train_s": [], "train_wall_s": [], "batch_size": set()}
        runs[model] = info
        try:
            layers = recipe_layers(spec, recipe, configs, output / "recipes")
            common = {
                "bundle_root": BUNDLE,
                "dataset_dir": dataset_dir,
                "image_size": [image_size, image_size],
                "in_channels": in_channels,
                "modality": modality,
                "progress_bar": False,
                **({"batch_size": batch_size} if batch_size is not None else {}),
            }
            # The variant's overrides, then the user's, win over the harness settings.
            mine = {**dict(spec.overrides), **dict((extra or {}).get(model, {}))}
            info["checkpoint_rule"] = checkpoint_rule(layers, mine)
            model_epochs = epochs
            if time_budget_min is not None:
                calib_dir = output / "calibration" / model
                epoch_s, warmup_s = _calibrate(layers, {**common, "seed": 0, **mine}, calib_dir, launcher,
                                                 settings_file)  # fmt: skip
                model_epochs = epochs_for_budget(time_budget_min * 60, epoch_s, warmup_s)
                info.update(epoch_s=epoch_s, warmup_s=warmup_s)
                print(f"{model}: {epoch_s:.2f} s/epoch + {warmup_s:.1f} s warm-up -> {model_epochs} epochs "
                      f"in {time_budget_min:g} min", flush=True)  # fmt: skip
        except (RuntimeError, ValueError, OSError, KeyError) as err:
            status[model] = str(err)
            print(f"FAILED {model}: {err}", file=sys.stderr, flush=True)
            continue
        for seed in range(seeds):
            run_dir = output / "runs" / model / f"seed{seed}"
            run_common = {**common, "output_dir": f"$'{run_dir.as_posix()}'", "ckpt_dir": run_dir / "models",
                          "seed": seed, "tracking_uri": uri, "experiment_name": EXPERIMENT}  # fmt: skip
            train_name, eval_name = f"{model}_seed{seed}_train_{tag}", f"{model}_seed{seed}_evaluate_{tag}"
            try:
                try:
                    wall = _run(
                        _bundle_cmd(layers, {**run_common, "max_epochs": model_epochs, "run_name": train_name,
                                             **mine}, settings_file),
                        run_dir / "train.log",
                        launcher,
                    )  # fmt: skip
                    _run(
                        _bundle_cmd([*layers, configs / "evaluate.json"],
                                    {**run_common, "run_name": eval_name, **mine}, settings_file),
                        run_dir / "evaluate.log",
                        launcher,
                    )  # fmt: skip
                finally:
                    # Runs of a failed command are nested too, so the parent shows what happened.
                    for name in (train_name, eval_name):
                        _nest_under(client, parent_id, experiment_id, name)
                train_run = _find_run(client, experiment_id, train_name)
                if train_run is not None:
                    info["epochs"].append(len(_epoch_times(client, train_run.info.run_id)) or model_epochs)
                    info["batch_size"].add(train_run.data.params.get("batch_size", "?"))
                    info["train_s"].append(_training_seconds(client, train_run))
                else:
                    info["epochs"].append(model_epochs)
                info["train_wall_s"].append(wall)
                csv_path = run_dir / eval_name / "per_image_metrics.csv"
                if not csv_path.is_file():
                    raise RuntimeError(f"no per_image_metrics.csv under {run_dir / eval_name}")
                for row in _read_rows(csv_path):
                    key = row.get("case_id") or row["case"]
                    case = cases.get(key) or cases.get(str(Path(key).resolve()))
                    if case is None:
                        raise RuntimeError(
                            f"{csv_path}: case {key!r} is not in the test split of the datalist"
                        )
                    per_image.append({"model": model, "seed": seed, "case": case.case_id, "patient": case.patient,
                                      **{m: float(row[m]) for m in METRICS}})  # fmt: skip
                checkpoints[model] = run_dir / "models" / "model.pt"
            except (RuntimeError, ValueError, OSError) as err:
                status[model] = str(err)
                logger.error("%s, seed %d failed: %s", model, seed, err)
                print(f"FAILED {model} seed {seed}: {err}", file=sys.stderr, flush=True)
                per_image = [r for r in per_image if r["model"] != model]
                break
    wall_minutes = (time.monotonic() - started) / 60

    from litenext_monai.io.atomic import atomic_write

    def write_per_image(tmp: Path) -> None:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["model", "seed", "case", "patient", *METRICS],
                                    lineterminator="\n")  # fmt: skip
            writer.writeheader()
            writer.writerows(per_image)

    atomic_write(output / "per_image.csv", write_per_image)
    ok = [m for m in models if status[m] == "ok"]
    stats_reference = reference if reference in ok else None
    table = summarise(per_image, ok, stats_reference, n_boot=n_boot) if ok and stats_reference else (
        summarise(per_image, ok, ok[0], n_boot=n_boot) if ok else [])  # fmt: skip
    rows = {r["model"]: r for r in table}
    costs = _costs({m: checkpoints[m] for m in ok}, image_size) if ok else {}
    final = []
    for model in models:
        spec, info = registry[model], runs.get(model, {})
        row = {"model": model, "label": spec.label, "base": spec.base or "", "status": status[model],
               "recipe": recipe, **rows.get(model, {}), **costs.get(model, {})}  # fmt: skip
        epochs_run = sorted(set(info.get("epochs", [])))
        row["epochs"] = "/".join(str(e) for e in epochs_run) if epochs_run else ""
        walls, trains = info.get("train_wall_s", []), info.get("train_s", [])
        row["train_wall_s"] = statistics.fmean(walls) if walls else math.nan
        row["train_s"] = statistics.fmean(trains) if trains else math.nan
        row["batch_size"] = "/".join(sorted(str(b) for b in info.get("batch_size", ()))) or (batch_size or "")
        row["checkpoint_rule"] = info.get("checkpoint_rule", "")
        row["epoch_s"], row["warmup_s"] = info.get("epoch_s", math.nan), info.get("warmup_s", math.nan)
        final.append(row)
    per_model = "; ".join(
        f"{r['label']}: {r['epochs'] or '—'} ep, batch {r['batch_size'] or '—'}, {_fmt(r['train_s'], 0)} s "
        f"training ({_fmt(r['train_wall_s'], 0)} s run wall), ckpt {r['checkpoint_rule'] or '—'}"
        for r in final
    )
    unit = next((r.get("unit") for r in table if r.get("unit")), "case")
    budget = (
        f"{time_budget_min:g} min of training epochs per run (calibrated; start-up and model logging excluded)"
        if time_budget_min
        else "none (fixed epochs)"
    )
    settings = (
        f"Settings: recipe {recipe}; {seeds} seed(s); {image_size}×{image_size} px, {in_channels} input channel(s), "
        f"modality {modality}; time budget {budget}; dataset {dataset_dir.name}; per model: {per_model}. "
        f"Dice/IoU/HD95: mean ± sd over seeds of the per-seed test means. ΔDice: paired difference against "
        f"{registry[reference].label}, 95 % CI from a hierarchical bootstrap (seeds, then {unit}s within seeds, "
        f"{n_boot} replicates). p: two-sided Wilcoxon signed-rank and paired t on per-{unit} means over seeds "
        f"(they ignore seed variance), Holm-adjusted over the {max(0, len(ok) - 1)} models compared. "
        f"Evaluated and timed: the deploy form. MACs at 1×{in_channels}×{image_size}²: thop convention (training "
        f"form) / conv+linear as executed (deploy form). Latency: batch 1, 2 threads, median of 3 interleaved "
        f"rounds. Wall time {wall_minutes:.1f} min."
    )
    write_tables(final, output, settings, registry[reference].label)
    plots = _box_plots(per_image, ok, {m: registry[m].label for m in models}, output)
    for path in [output / "comparison.csv", output / "comparison.md", output / "per_image.csv", *plots]:
        client.log_artifact(parent_id, str(path))
    client.log_metric(parent_id, "failed_models", len(models) - len(ok))
    client.set_terminated(parent_id, "FINISHED" if len(ok) == len(models) else "FAILED")
    atomic_write(output / "summary.json", lambda tmp: tmp.write_text(
        json.dumps({"status": status, "wall_minutes": wall_minutes, "parent_run_id": parent_id, "tag": tag},
                   indent=2), encoding="utf-8"))  # fmt: skip
    return len(models) - len(ok)
