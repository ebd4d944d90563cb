"""prepare_dataset with hostile inputs: corrupt files are reported, DICOM patients get keyed pseudonyms."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.uid import generate_uid

from litenext_monai.data import prepare_dataset
from litenext_monai.io import PSEUDONYM_SECRET_ENV, patient_key
from tests.dicom_helpers import write_dicom_slice

REPO = Path(__file__).resolve().parents[2]


def _raw_with_empty_nifti(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "images" / "ok.png")
    Image.fromarray((np.eye(16) * 255).astype(np.uint8)).save(root / "masks" / "ok.png")
    (root / "images" / "bad.nii.gz").write_bytes(b"")
    (root / "masks" / "bad.nii.gz").write_bytes(b"")
    return root


def test_zero_byte_nifti_is_a_reported_error_not_a_traceback(tmp_path: Path) -> None:
    raw = _raw_with_empty_nifti(tmp_path / "raw")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "prepare_dataset.py"), "folders", str(raw), str(out)],
        capture_output=True, text=True, timeout=300, env=env, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    report = json.loads((out / "validation_report.json").read_text())
    (issue,) = report["issues"]
    assert (
        issue["kind"] == "unreadable"
        and issue["file"] == "images/bad.nii.gz"
        and "Empty file" in issue["message"]
    )
    datalist = json.loads((out / "datalist.json").read_text())
    assert [e["case_id"] for split in ("training", "validation", "test") for e in datalist[split]] == ["ok"]


def _dicom_raw(root: Path, patient_id: str) -> Path:
    (root / "masks").mkdir(parents=True)
    write_dicom_slice(
        root / "images" / "scan.dcm", np.full((8, 8), 100, np.int16), series_uid=generate_uid(),
        position=(0, 0, 0), modality="CT", patient_id=patient_id,
    )  # fmt: skip
    Image.fromarray((np.eye(8) * 255).astype(np.uint8)).save(root / "masks" / "scan.png")
    return root


def test_pseudonyms_are_keyed_with_a_private_per_dataset_secret(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.delenv(PSEUDONYM_SECRET_ENV, raising=False)
    raw = _dicom_raw(tmp_path / "raw", "PAT-123456")
    out = tmp_path / "out"
    prepare_dataset("folders", raw, out, ratios=(1, 0, 0))
    secret_file = out / ".pseudonym_secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_bytes().strip()
    text = (out / "datalist.json").read_text()
    (entry,) = json.loads(text)["training"]
    # independent oracle: HMAC-SHA-256 computed here with the standard library
    import hmac

    expected = hmac.new(secret, b"PAT-123456", hashlib.sha256).hexdigest()[:16]
    assert entry["patient"] == f"dicom-{expected}"
    assert hashlib.sha256(b"PAT-123456").hexdigest()[:12] not in text  # the old unsalted pseudonym
    assert "PAT-123456" not in text and secret.decode() not in text and secret.decode() not in caplog.text
    # preparing again reuses the secret: same pseudonyms; another secret gives other ones
    prepare_dataset("folders", raw, out, ratios=(1, 0, 0))
    assert json.loads((out / "datalist.json").read_text())["training"][0]["patient"] == entry["patient"]
    other = tmp_path / "other"
    prepare_dataset("folders", raw, other, ratios=(1, 0, 0), pseudonym_secret="another secret")
    assert json.loads((other / "datalist.json").read_text())["training"][0]["patient"] != entry["patient"]
    assert not (other / ".pseudonym_secret").exists()
    ds = pydicom.dcmread(raw / "images" / "scan.dcm")
    assert patient_key(ds, secret) == expected
