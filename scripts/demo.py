"""The one-command demo: synthetic data → SeRP + MWL training → evaluation → inference → summary.

Every step runs the MONAI bundle through ``python -m monai.bundle run`` exactly as a user would,
with MLflow tracking into an embedded SQLite store. Run from anywhere::

    python scripts/demo.py [--output demo_output] [--epochs 30] [--image-size 128] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.filters import threshold_otsu

from litenext_monai.data import generate_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "litenext_seg"
CONFIGS = BUNDLE / "configs"
METRICS = ("dice", "iou", "precision", "recall", "f1", "hd95")

#: Demo settings; everything else is the bundle's paper recipe (spec §5).
DEMO_DEFAULTS = {"epochs": 30, "image_size": 128, "batch_size": 8, "learning_rate": 2e-3}


def _bundle_run(configs: list[str], overrides: dict[str, object], tracking: bool = True) -> None:
    config_file = str(configs[0]) if len(configs) == 1 else repr([str(c) for c in configs])
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        config_file,
        "--bundle_root",
        str(BUNDLE),
    ]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    if tracking:
        cmd += ["--tracking", str(CONFIGS / "mlflow_settings.json")]
    print("\n$ " + " ".join(cmd), flush=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run(cmd, check=True, env=env)


def _read_per_image(csv_path: Path) -> list[dict[str, float]]:
    with csv_path.open(newline="", encoding="utf-8") as handle:
        return [{k: float(row[k]) for k in METRICS} for row in csv.DictReader(handle)]


def _reference_dice(datalist: Path) -> dict[str, float]:
    """Test Dice of two trivial predictors: everything foreground, and a global Otsu threshold."""
    data = json.loads(datalist.read_text(encoding="utf-8"))
    root = datalist.parent
    constant, otsu = [], []
    for item in data["test"]:
        image = np.asarray(Image.open(root / item["image"]).convert("L"), dtype=float)
        label = np.asarray(Image.open(root / item["label"])) > 0
        guess = image > threshold_otsu(image)
        constant.append(2 * label.sum() / (label.sum() + label.size))
        otsu.append(2 * (guess & label).sum() / max(guess.sum() + label.sum(), 1))
    return {
        "all-foreground constant": statistics.mean(constant),
        "global Otsu threshold": statistics.mean(otsu),
    }


def _print_summary(
    rows: list[dict[str, float]], references: dict[str, float], out: Path, minutes: float
) -> None:
    print("\n" + "=" * 72)
    print(f"LiteNeXt (SeRP + MWL + Dice) on the synthetic test split: {len(rows)} images, {minutes:.1f} min")
    print("=" * 72)
    print(f"{'metric':<10}{'mean':>10}{'sd':>10}{'min':>10}{'max':>10}")
    for name in METRICS:
        values = [r[name] for r in rows]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        print(
            f"{name:<10}{statistics.mean(values):>10.4f}{sd:>10.4f}{min(values):>10.4f}{max(values):>10.4f}"
        )
    print("\nReference test Dice of trivial predictors:")
    for name, value in references.items():
        print(f"  {name:<26}{value:.4f}")
    db = out / "mlruns.db"
    print(f"\nPer-image metrics: {out}/evaluate_*/per_image_metrics.csv")
    print(f"Predicted masks and overlays: {out}/predictions/")
    print(f"Inference checkpoint: {out}/models/model.pt")
    print(
        f"MLflow UI: {Path(sys.executable).parent}/mlflow ui --backend-store-uri sqlite:///{db} --port 5000"
    )
    print("          then open http://127.0.0.1:5000 (experiment 'litenext_seg')")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, default=REPO / "demo_output", help="output folder")
    parser.add_argument("--epochs", type=int, default=DEMO_DEFAULTS["epochs"])
    parser.add_argument("--image-size", type=int, default=DEMO_DEFAULTS["image_size"])
    parser.add_argument("--batch-size", type=int, default=DEMO_DEFAULTS["batch_size"])
    parser.add_argument("--learning-rate", type=float, default=DEMO_DEFAULTS["learning_rate"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.monotonic()
    out = args.output.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/4] Generating the synthetic nuclei dataset in {out / 'data'}", flush=True)
    datalist = generate_synthetic_dataset(
        out / "data", variant="nuclei", image_size=args.image_size, seed=args.seed
    )

    common = {
        "dataset_dir": out / "data",
        "output_dir": f"$'{out}'",
        "ckpt_dir": out / "models",
        "in_channels": 1,
        "modality": "rgb",
        "image_size": f"[{args.image_size},{args.image_size}]",
        "seed": args.seed,
    }
    print(f"[2/4] Training LiteNeXt with SeRP + MWL + Dice for {args.epochs} epochs", flush=True)
    _bundle_run(
        [CONFIGS / "train.json"],
        {
            **common,
            "max_epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "num_workers": 1,
        },
    )
    print("[3/4] Evaluating the best checkpoint on the test split", flush=True)
    _bundle_run([CONFIGS / "train.json", CONFIGS / "evaluate.json"], common)
    test_images = [str(datalist.parent / e["image"]) for e in json.loads(datalist.read_text())["test"][:4]]
    print("[4/4] Segmenting four test images", flush=True)
    _bundle_run(
        [CONFIGS / "train.json", CONFIGS / "inference.json"],
        {**common, "infer_input": repr(test_images)},
        tracking=False,
    )

    evaluations = sorted(out.glob("evaluate_*/per_image_metrics.csv"), key=lambda p: p.stat().st_mtime)
    rows = _read_per_image(evaluations[-1])
    _print_summary(rows, _reference_dice(datalist), out, (time.monotonic() - start) / 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
