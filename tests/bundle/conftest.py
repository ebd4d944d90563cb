"""Shared fixtures of the bundle tests: one tiny synthetic dataset and one tracked training run.

Every bundle command runs as ``python -m monai.bundle ...`` in a subprocess, from the repository
root unless a test chooses another working directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "litenext_seg"
CONFIGS = BUNDLE / "configs"
TRAIN = str(CONFIGS / "train.json")
EVALUATE = str(CONFIGS / "evaluate.json")
INFERENCE = str(CONFIGS / "inference.json")
SETTINGS = str(CONFIGS / "mlflow_settings.json")
IMAGE_SIZE = 64
NUM_TRAIN, NUM_VAL, NUM_TEST = 8, 2, 2
BATCH_SIZE = 4


def expr_path(path: Path | str) -> str:
    """``output_dir`` as a ``$`` expression (a literal path loses MLflow's config artifact)."""
    return f"$'{Path(path).as_posix()}'"


def bundle_cmd(verb: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", verb, *args]


#: One launcher server for the whole session: a bundle command then starts in well under a second
#: instead of re-importing MONAI, torch and MLflow (10-13 s each time on 2 cores).
_LAUNCHER = None


def launcher():
    global _LAUNCHER
    if _LAUNCHER is None:
        from litenext_monai.experiments.launcher import BundleLauncher

        _LAUNCHER = BundleLauncher()
    return _LAUNCHER


def run_cmd(
    cmd: list[str],
    timeout: float = 240,
    cwd: Path = REPO,
    env: dict | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run a bundle command (from the repository root by default); fail with its output on a non-zero exit.

    ``check=False`` returns a failed command's result instead of failing the test.

    ``python -m monai.bundle`` commands are forked from the session's pre-imported server
    (:class:`~litenext_monai.experiments.launcher.BundleLauncher`); others run as subprocesses.
    """
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)  # it would override every --tracking_uri
    if not launcher().is_bundle_command(cmd):
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    else:
        with tempfile.TemporaryDirectory(prefix="bundle_cmd_") as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            code = launcher().run(cmd, stdout=out, stderr=err, cwd=cwd, env=env, timeout=timeout)
            proc = subprocess.CompletedProcess(
                cmd, code, out.read_text(errors="replace"), err.read_text(errors="replace")
            )
    if check and proc.returncode != 0:
        pytest.fail(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def small_overrides(data_dir: Path, output_dir: Path, ckpt_dir: Path, max_epochs: int = 2) -> list[str]:
    """Overrides for a tiny CPU run on the synthetic grey 64×64 dataset."""
    return [
        "--bundle_root", str(BUNDLE),
        "--dataset_dir", str(data_dir),
        "--output_dir", expr_path(output_dir),
        "--ckpt_dir", str(ckpt_dir),
        "--image_size", f"[{IMAGE_SIZE},{IMAGE_SIZE}]",
        "--in_channels", "1",
        "--batch_size", str(BATCH_SIZE),
        "--val_batch_size", "2",
        "--num_workers", "0",
        "--max_epochs", str(max_epochs),
        "--progress_bar", "False",
    ]  # fmt: skip


@dataclass
class TrainedBundle:
    data_dir: Path
    datalist: dict
    output_dir: Path
    ckpt_dir: Path
    run_name: str
    max_epochs: int


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    from litenext_monai.data import generate_synthetic_dataset

    folder = tmp_path_factory.mktemp("bundle_data")
    generate_synthetic_dataset(folder, "nuclei", NUM_TRAIN, NUM_VAL, NUM_TEST, image_size=IMAGE_SIZE, seed=3)
    return folder


@pytest.fixture(scope="session")
def trained_bundle(synthetic_data, tmp_path_factory) -> TrainedBundle:
    """Train 2 epochs with the bundle's MLflow settings; shared by the evaluate/infer/export tests."""
    root = tmp_path_factory.mktemp("bundle_run")
    output_dir, ckpt_dir = root / "out", root / "models"
    run_cmd(
        bundle_cmd(
            "run",
            "--config_file",
            TRAIN,
            *small_overrides(synthetic_data, output_dir, ckpt_dir),
            "--tracking",
            SETTINGS,
        )
    )
    run_name = (ckpt_dir / "last_run_name.txt").read_text().strip()
    datalist = json.loads((synthetic_data / "datalist.json").read_text())
    return TrainedBundle(synthetic_data, datalist, output_dir, ckpt_dir, run_name, 2)
