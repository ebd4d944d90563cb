"""Every seed network trains to a sensible model on its own recipe's defaults (slow, CPU).

Each network runs through the bundle exactly as the comparison harness launches it
(``train.json`` + its recipe overlay, ``python -m monai.bundle run``), with only the small-budget
overrides the harness can pass (epochs, image size, batch size, workers). The final validation
Dice (``val_per_image_metrics.csv`` of the last validation) must clearly beat both trivial
predictors, whose Dice is computed here from the validation labels alone.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.bundle.conftest import BUNDLE, CONFIGS, bundle_cmd, expr_path, run_cmd

NUM_TRAIN, NUM_VAL = 32, 4
BATCH_SIZE = 4
#: the budget per network: (epochs, image size); LV-UNet needs multiples of 128. Everything else is
#: the recipe's default. Measured final validation Dice on a 2-core VM: docs/networks.md.
BUDGET = {
    "litenext": (20, 64),
    "cmunext_xxs": (10, 64),
    "mini_net": (10, 64),
    "lv_unet": (10, 128),
    "monai_unet": (10, 64),
}
OVERLAYS = {
    "litenext": None,
    "cmunext_xxs": "cmunext_xxs.json",
    "mini_net": "mini_net.json",
    "lv_unet": "lv_unet.json",
    "monai_unet": "monai_unet.json",
}
#: how far above the better trivial predictor the trained network must be (Dice points)
MARGIN = 0.15


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[int, Path]:
    """One synthetic grey nuclei dataset per image size (generated at that size: no resampling)."""
    from litenext_monai.data import generate_synthetic_dataset

    folders = {}
    for size in sorted({size for _, size in BUDGET.values()}):
        folder = tmp_path_factory.mktemp(f"seed_nets_data_{size}")
        generate_synthetic_dataset(folder, "nuclei", NUM_TRAIN, NUM_VAL, 1, image_size=size, seed=7)
        folders[size] = folder
    return folders


def _trivial_dice(dataset: Path) -> tuple[float, float]:
    """Mean per-image Dice of an all-background and of an all-foreground prediction (MONAI's
    ``ignore_empty=False`` convention: an empty label scores 1 against an empty prediction)."""
    datalist = json.loads((dataset / "datalist.json").read_text())
    background, foreground = [], []
    for item in datalist["validation"]:
        label = np.asarray(Image.open(dataset / item["label"])) > 0
        positives, pixels = int(label.sum()), label.size
        background.append(1.0 if positives == 0 else 0.0)
        foreground.append(2.0 * positives / (positives + pixels))
    return float(np.mean(background)), float(np.mean(foreground))


def _final_validation(run_dir: Path) -> tuple[float, int]:
    """Mean Dice of the last validation and the number of validations the learning curve holds."""
    with (run_dir / "val_per_image_metrics.csv").open() as handle:
        dice = [float(row["dice"]) for row in csv.DictReader(handle)]
    assert len(dice) == NUM_VAL
    return float(np.mean(dice)), len(dice)


@pytest.mark.slow
@pytest.mark.parametrize("model", list(OVERLAYS))
def test_seed_network_trains_on_its_recipe_defaults(model, datasets, tmp_path):
    epochs, size = BUDGET[model]
    dataset = datasets[size]
    configs = [str(CONFIGS / "train.json")]
    if OVERLAYS[model]:
        configs.append(str(CONFIGS / OVERLAYS[model]))
    output_dir, ckpt_dir = tmp_path / "out", tmp_path / "models"
    overrides = [
        "--bundle_root", str(BUNDLE),
        "--dataset_dir", str(dataset),
        "--output_dir", expr_path(output_dir),
        "--ckpt_dir", str(ckpt_dir),
        "--image_size", f"[{size},{size}]",
        "--in_channels", "1",
        "--batch_size", str(BATCH_SIZE),
        "--val_batch_size", "2",
        "--num_workers", "0",
        "--max_epochs", str(epochs),
        "--progress_bar", "False",
        "--seed", "0",
    ]  # fmt: skip
    start = time.monotonic()
    proc = run_cmd(bundle_cmd("run", "--config_file", json.dumps(configs), *overrides), timeout=600)
    seconds = time.monotonic() - start
    run_name = (ckpt_dir / "last_run_name.txt").read_text().strip()
    dice, _ = _final_validation(output_dir / run_name)
    background, foreground = _trivial_dice(dataset)
    print(f"{model}: final val Dice {dice:.3f} (all-background {background:.3f}, all-foreground "
          f"{foreground:.3f}) after {epochs} epochs at {size}² in {seconds:.0f} s")  # fmt: skip
    assert background < 0.05 and foreground < 0.6  # the baselines are what they should be
    assert dice > max(background, foreground) + MARGIN, proc.stdout[-2000:]
