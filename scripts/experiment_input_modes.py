#!/usr/bin/env python
"""Patch + sliding window vs resize at equal training time, the gain from flip TTA, per-class Dice.

Runs the bundle (``bundles/litenext_seg``) end to end on the built-in synthetic data:

1. ``variant="large"`` (1024×1024 by default, small nuclei): trains ``--input_mode resize`` and
   ``--input_mode patch`` for the same CPU-time budget each (the training process stops itself
   after ``--budget_s`` seconds of its own CPU time from the trainer's start, so other processes on a shared machine do
   not bias the comparison), then evaluates each best checkpoint on the test split without and
   with ``--tta True``.
2. ``variant="multiclass"`` (128×128, cytoplasm = 1, nucleus = 2): trains for the same budget
   and evaluates without and with TTA; the per-class Dice comes from ``per_image_metrics.csv``.

Prints one Markdown table row per evaluation (mean test Dice over images, and per class) and
writes ``results.json`` into ``--out``. Each bundle command runs in its own process with
``OMP_NUM_THREADS=1`` (set ``--threads`` for more).

Example (the documented numbers)::

    PYTHONPATH=. OMP_NUM_THREADS=1 nice -n 10 python scripts/experiment_input_modes.py --out /tmp/modes
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "litenext_seg"
TRAIN, EVALUATE = BUNDLE / "configs" / "train.json", BUNDLE / "configs" / "evaluate.json"

#: Overlay that ends training once it has used ``cpu_budget_s`` seconds of CPU time (counted from
#: the trainer's start, so imports and data caching are not counted; validation is).
CPU_BUDGET_OVERLAY = {
    "imports": [
        "$import os",
        "$import time",
        "$import torch",
        "$import monai",
        "$import ignite",
        "$import litenext_monai",
        "$import litenext_monai.engines",
        "$import litenext_monai.data",
        "$import litenext_monai.inferers",
        "$import litenext_monai.inference",
        "$import litenext_monai.io",
        "$import litenext_monai.model",
        "$import litenext_monai.tracking",
        "$import litenext_monai.transforms",
        "$import litenext_monai.networks",
    ],
    "cpu_budget_s": 300,
    "cpu_start": "$lambda engine: setattr(engine.state, 'cpu_start', time.process_time())",
    "cpu_stop": "$lambda engine: engine.terminate() "
    "if time.process_time() - engine.state.cpu_start > @cpu_budget_s else None",
    "run": [
        "$@train#trainer.add_event_handler(ignite.engine.Events.STARTED, @cpu_start)",
        "$@train#trainer.add_event_handler(ignite.engine.Events.ITERATION_COMPLETED, @cpu_stop)",
        "$@train#trainer.run()",
    ],
}


def _run(cmd: list[str], log: Path, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}), see {log}: {' '.join(cmd)}")
    return time.perf_counter() - start


def _bundle(configs: list[Path], *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str([str(c) for c in configs]),
        *args,
    ]


def _per_image_means(csv_path: Path) -> dict[str, float]:
    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = [c for c in rows[0] if c == "dice" or c.startswith("dice_class")]
    return {c: sum(float(r[c]) for r in rows) / len(rows) for c in columns} | {"images": len(rows)}


def _epochs_done(train_log: Path) -> int:
    return sum(
        1
        for line in train_log.read_text(errors="replace").splitlines()
        if "Epoch[" in line and "Complete" in line and "Trainer" in line
    )


def experiment(
    out: Path,
    name: str,
    data: Path,
    mode: str,
    image_size: int,
    budget_s: float,
    threads: int,
    extra: list[str],
) -> list[dict]:
    run = out / name
    run.mkdir(parents=True, exist_ok=True)
    overlay = run / "cpu_budget.json"
    overlay.write_text(json.dumps({**CPU_BUDGET_OVERLAY, "cpu_budget_s": budget_s}))
    common = [
        "--bundle_root", str(BUNDLE), "--dataset_dir", str(data), "--output_dir", f"$'{(run / 'eval').as_posix()}'",
        "--ckpt_dir", str(run / "models"), "--num_workers", "0", "--progress_bar", "False",
    ]  # fmt: skip
    train_s = _run(
        _bundle(
            [TRAIN, overlay], *common, "--input_mode", mode, "--image_size", f"[{image_size},{image_size}]",
            "--max_epochs", "100000", *extra,
        ),
        run / "train.log", threads,
    )  # fmt: skip
    results = []
    for tta in (False, True):
        before = set((run / "eval").glob("evaluate_*"))
        eval_s = _run(
            _bundle([TRAIN, EVALUATE], *common, "--tta", str(tta)), run / f"evaluate_tta{tta}.log", threads
        )
        (run_dir,) = set((run / "eval").glob("evaluate_*")) - before
        row = {
            "experiment": name, "input_mode": mode, "image_size": image_size, "tta": tta,
            "cpu_budget_s": budget_s, "train_wall_s": round(train_s, 1), "eval_wall_s": round(eval_s, 1),
            "epochs": _epochs_done(run / "train.log"), **_per_image_means(run_dir / "per_image_metrics.csv"),
        }  # fmt: skip
        results.append(row)
        print(json.dumps(row), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="working folder (data, runs, results.json)")
    parser.add_argument("--budget_s", type=float, default=300.0, help="CPU seconds of training per run")
    parser.add_argument("--large_size", type=int, default=1024, help="side of the large images (px)")
    parser.add_argument("--network_size", type=int, default=256, help="resize target = patch size (px)")
    parser.add_argument("--num_train", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip_multiclass", action="store_true")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO))
    from litenext_monai.data import generate_synthetic_dataset

    args.out.mkdir(parents=True, exist_ok=True)
    large = generate_synthetic_dataset(
        args.out / "data_large", "large", args.num_train, 2, 6, image_size=args.large_size, seed=0
    ).parent
    common = [
        "--batch_size",
        "4",
        "--val_batch_size",
        "1",
        "--learning_rate",
        "0.001",
        "--patches_per_image",
        "1",
    ]
    results = []
    for mode in ("resize", "patch"):
        results += experiment(
            args.out, f"large_{mode}", large, mode, args.network_size, args.budget_s, args.threads, common
        )
    if not args.skip_multiclass:
        multiclass = generate_synthetic_dataset(
            args.out / "data_mc", "multiclass", args.num_train, 2, 6, seed=0
        ).parent
        results += experiment(
            args.out, "multiclass", multiclass, "resize", 128, args.budget_s, args.threads, common
        )
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| experiment | input_mode | TTA | epochs | mean Dice | per class |")
    print("|---|---|---|---:|---:|---|")
    for r in results:
        per_class = ", ".join(f"{k[5:]}: {v:.3f}" for k, v in r.items() if k.startswith("dice_class"))
        print(
            f"| {r['experiment']} | {r['input_mode']} | {r['tta']} | {r['epochs']} | {r['dice']:.3f} | {per_class} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
