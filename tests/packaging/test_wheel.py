"""The wheel works without the checkout: console scripts, the shipped bundle and transform pipelines.

The wheel is built from this checkout and installed with ``--no-deps`` into a fresh virtual
environment whose only other packages are this environment's dependencies (reached through a
``.pth`` line, which does not activate the editable install of the checkout). Every command then
runs from a folder outside the checkout.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.hospital_helpers import tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = [
    "litenext-benchmark",
    "litenext-compare",
    "litenext-dicom-node",
    "litenext-export",
    "litenext-prepare",
    "litenext-segment-volume",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """``(bin folder of the fresh venv, a working directory outside the checkout)``."""
    root = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist"), str(REPO)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (root / "dist").glob("litenext_monai-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in (
        "litenext_monai/resources/transforms/litenext_2d.json",
        "litenext_monai/resources/bundles/litenext_seg/configs/train.json",
        "litenext_monai/resources/bundles/litenext_seg/configs/inference.json",
        "litenext_monai/resources/bundles/litenext_seg/transforms/litenext_2d.json",
    ):
        assert shipped in names, shipped
    assert not any(n.endswith((".pt", ".db")) for n in names)  # no trained models or stores
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    (purelib / "_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    work = root / "elsewhere"
    work.mkdir()
    return venv / "bin", work


def _run(bin_dir: Path, work: Path, *cmd: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [str(bin_dir / cmd[0]), *cmd[1:]], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_package_comes_from_the_wheel(installed) -> None:
    bin_dir, work = installed
    proc = _run(bin_dir, work, "python", "-c", "import litenext_monai; print(litenext_monai.__file__)")
    assert proc.returncode == 0, proc.stderr
    assert not Path(proc.stdout.strip()).is_relative_to(REPO)


@pytest.mark.parametrize("script", SCRIPTS)
def test_console_script_help(installed, script: str) -> None:
    bin_dir, work = installed
    proc = _run(bin_dir, work, script, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


def test_real_commands_outside_the_checkout(installed, tmp_path: Path) -> None:
    bin_dir, work = installed
    ckpt = tiny_checkpoint(tmp_path / "models")
    exported = _run(bin_dir, work, "litenext-export", str(ckpt), "model.ts")
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert json.loads(exported.stdout)["max_abs_diff"] <= 1e-4 and (work / "model.ts").is_file()

    (tmp_path / "storage" / "jobs").mkdir(parents=True)
    status = _run(bin_dir, work, "litenext-dicom-node", "status", "--storage", str(tmp_path / "storage"))
    assert status.returncode == 0, status.stderr[-2000:]
    assert "failed" in status.stdout

    listed = _run(bin_dir, work, "litenext-prepare", "--list")
    assert listed.returncode == 0 and "sunnybrook" in listed.stdout.lower(), listed.stderr[-2000:]

    # The Predictor inside volume inference needs the transform pipelines shipped in the wheel.
    volume = np.random.default_rng(0).integers(0, 255, (40, 36, 2), dtype=np.uint8)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), work / "scan.nii.gz")
    segmented = _run(bin_dir, work, "litenext-segment-volume", str(ckpt), "scan.nii.gz", "mask.nii.gz")
    assert segmented.returncode == 0, segmented.stderr[-2000:]
    assert np.asarray(nib.load(work / "mask.nii.gz").dataobj).shape == volume.shape
