"""Compare the hand-written DICOM slice order/affine of an older commit with the highdicom-based ones.

Usage (from the repository root)::

    PYTHONPATH=. OMP_NUM_THREADS=1 python docs/scripts/compare_dicom_spatial.py d885e8e

The old ``read_dicom_series``/``dicom_affine`` (``litenext_monai/io/dicom.py``) and ``position_order``
(``litenext_monai/io/dicom_seg.py``) are taken from ``git show <commit>:...``; both versions read the
same random oblique series (random rotation, pixel spacing, slice step and origin, 1-6 slices
written in shuffled order) and pydicom's sample files. Prints the number of cases and the largest
absolute affine difference; exits non-zero on any difference in order, volume or positions.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_files
from pydicom.uid import generate_uid

from litenext_monai.io import dicom as new_dicom
from litenext_monai.io.dicom_seg import position_order
from tests.dicom_helpers import write_dicom_slice


def _old_module(commit: str, path: str, name: str) -> types.ModuleType:
    source = subprocess.run(
        ["git", "show", f"{commit}:{path}"], capture_output=True, text=True, check=True
    ).stdout
    source = source.replace("from .normalize", "from litenext_monai.io.normalize").replace(
        "from .atomic", "from litenext_monai.io.atomic"
    )
    module = types.ModuleType(name)
    module.__dict__["__name__"] = name
    sys.modules[name] = module
    exec(compile(source, f"{commit}:{path}", "exec"), module.__dict__)
    return module


def main(commit: str, trials: int = 60) -> int:
    old_dicom = _old_module(commit, "litenext_monai/io/dicom.py", "old_dicom")
    old_seg = _old_module(commit, "litenext_monai/io/dicom_seg.py", "old_dicom_seg")
    rng = np.random.default_rng(0)
    worst, cases, orders = 0.0, 0, 0
    for _ in range(trials):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        r, c = q[:, 0], q[:, 1]
        normal = np.cross(r, c)
        spacing, step, origin = rng.uniform(0.3, 2.0, 2), rng.uniform(0.5, 5.0), rng.uniform(-200, 200, 3)
        k = int(rng.integers(1, 7))
        with tempfile.TemporaryDirectory() as folder:
            series = generate_uid()
            for name, s in enumerate(rng.permutation(k)):
                write_dicom_slice(
                    Path(folder) / f"{name}.dcm",
                    rng.integers(0, 99, (6, 5)).astype(np.uint16),
                    series_uid=series,
                    instance=int(rng.integers(1, 50)),
                    position=tuple(origin + s * step * normal),
                    orientation=tuple(np.r_[r, c]),
                    spacing=tuple(spacing),
                )
            old_volume, old_meta = old_dicom.read_dicom_series(folder)
            new_volume, new_meta = new_dicom.read_dicom_series(folder)
            if old_meta["files"] != new_meta["files"] or not np.array_equal(old_volume, new_volume):
                print("slice order differs in", folder)
                return 1
            if not np.allclose(old_meta["positions"], new_meta["positions"], atol=1e-9):
                print("positions differ in", folder)
                return 1
            worst = max(worst, float(np.abs(old_meta["affine"] - new_meta["affine"]).max()))
            headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(Path(folder).iterdir())]
            for strip in (False, True):
                if strip:
                    for h in headers:
                        del h.ImagePositionPatient  # the Instance Number fallback
                if old_seg.position_order(headers) != position_order(headers):
                    print("position_order differs")
                    return 1
                orders += 1
        cases += 1
    for path in get_testdata_files("*.dcm"):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            old = old_dicom.dicom_affine(ds)
        except Exception:  # files the old code could not handle either
            continue
        worst = max(worst, float(np.abs(old - new_dicom.dicom_affine(ds)).max()))
        cases += 1
    print(
        f"{cases} series/sample files, {orders} position_order checks; max |old - new| affine = {worst:.3g}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "d885e8e"))
