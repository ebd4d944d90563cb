"""Helpers for the layout tests: draw fixture images and check converted output independently.

The checks read the written files with PIL and nibabel directly, not with the package's readers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

__all__ = [
    "random_image",
    "rect_mask",
    "tree_digest",
    "read_output_mask",
    "read_output_image",
    "check_prepared",
]


def random_image(rng: np.random.Generator, height: int, width: int, channels: int = 3) -> np.ndarray:
    """A random ``uint8`` image, ``H×W×C`` (or ``H×W`` for one channel)."""
    shape = (height, width, channels) if channels > 1 else (height, width)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def rect_mask(height: int, width: int, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    """``H×W`` bool mask, True on rows ``top:bottom`` and columns ``left:right``."""
    mask = np.zeros((height, width), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def tree_digest(root: Path) -> str:
    """Hash of every file path, size and content under ``root`` (to prove it was not modified)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def read_output_mask(path: Path) -> np.ndarray:
    """A written mask as ``H×W`` bool, read with PIL or nibabel."""
    if path.name.endswith(".nii.gz"):
        data = np.asarray(nib.load(str(path)).dataobj)
        assert set(np.unique(data).tolist()) <= {0, 1}, f"{path}: NIfTI mask values {np.unique(data)}"
        return data.astype(bool)
    with Image.open(path) as image:
        data = np.asarray(image)
    assert image.mode == "L", f"{path}: mask mode {image.mode}"
    assert set(np.unique(data).tolist()) <= {0, 255}, f"{path}: PNG mask values {np.unique(data)}"
    return data == 255


def read_output_image(path: Path) -> np.ndarray:
    """A written image read with PIL or nibabel, without any conversion."""
    if path.name.endswith(".nii.gz"):
        return np.asarray(nib.load(str(path)).dataobj)
    with Image.open(path) as image:
        return np.asarray(image)


def check_prepared(
    out_dir: Path,
    masks: dict[str, np.ndarray],
    images: dict[str, np.ndarray] | None = None,
) -> dict:
    """Assert the prepared folder holds exactly ``masks`` (and ``images``) pixel for pixel.

    Returns the datalist.
    """
    datalist = json.loads((out_dir / "datalist.json").read_text())
    entries = {e["case_id"]: e for key in ("training", "validation", "test") for e in datalist[key]}
    assert set(entries) == set(masks), f"cases {sorted(entries)} != expected {sorted(masks)}"
    for case, expected in masks.items():
        got = read_output_mask(out_dir / entries[case]["label"])
        assert got.shape == expected.shape, f"{case}: mask shape {got.shape} != {expected.shape}"
        assert np.array_equal(got, expected.astype(bool)), (
            f"{case}: mask differs in {int((got != expected).sum())} pixels"
        )
        if images is not None and case in images:
            image = read_output_image(out_dir / entries[case]["image"])
            assert np.array_equal(image, images[case]), f"{case}: image pixels differ"
    return datalist
