"""Chest X-ray lungs: Shenzhen (training/validation) → Montgomery (test), as in LiteNeXt §4.1.6."""

from __future__ import annotations

import re
from pathlib import Path

from ..validation import INFO, ValidationReport
from .base import Case, Layout, find_dir, image_loader, mask_loader, natural_key

__all__ = ["LUNG_XRAY"]

_SHENZHEN = re.compile(r"^CHNCXR_\d+_\d$", re.IGNORECASE)
_SHENZHEN_MASK = re.compile(r"^(CHNCXR_\d+_\d)_mask$", re.IGNORECASE)
_MONTGOMERY = re.compile(r"^MCUCXR_\d+_\d$", re.IGNORECASE)


def _files(root: Path, pattern: re.Pattern) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.png"), key=lambda p: natural_key(str(p))):
        match = pattern.match(path.stem)
        if match:
            found.setdefault(match.group(1) if match.groups() else path.stem, path)
    return found


def _shenzhen(raw_dir: Path, report: ValidationReport) -> list[Case]:
    root = find_dir(raw_dir, ["ChinaSet_AllFiles"])
    if root is None:
        raise FileNotFoundError(f"{raw_dir}: no ChinaSet_AllFiles folder (Shenzhen set)")
    images = {k: p for k, p in _files(root, _SHENZHEN).items() if p.parent.name.lower() == "cxr_png"}
    masks = _files(raw_dir, _SHENZHEN_MASK)
    cases = []
    for stem, image in images.items():
        mask = masks.pop(stem, None)
        if mask is None:
            # About a hundred Shenzhen images have no published lung mask; the paper drops them.
            report.add(INFO, "image_without_mask", image, "no lung mask published; skipped")
            continue
        cases.append(
            Case(stem, image_loader(image), mask_loader(mask), str(image), [str(mask)], subset="train")
        )
    for mask in masks.values():
        report.warning("mask_without_image", mask, "no matching Shenzhen image")
    return cases


def _montgomery(raw_dir: Path, report: ValidationReport) -> list[Case]:
    root = find_dir(raw_dir, ["MontgomerySet"])
    if root is None:
        raise FileNotFoundError(f"{raw_dir}: no MontgomerySet folder")
    image_dir = root / "CXR_png"
    left_dir, right_dir = root / "ManualMask" / "leftMask", root / "ManualMask" / "rightMask"
    cases = []
    for image in sorted(image_dir.glob("*.png"), key=lambda p: natural_key(p.name)):
        if not _MONTGOMERY.match(image.stem):
            continue
        left, right = left_dir / image.name, right_dir / image.name
        missing = [str(p) for p in (left, right) if not p.is_file()]
        if missing:
            report.warning("image_without_mask", image, f"missing lung mask(s): {', '.join(missing)}")
            continue
        cases.append(
            Case(
                image.stem,
                image_loader(image),
                mask_loader(left, right),
                str(image),
                [str(left), str(right)],
                subset="test",
            )
        )
    return cases


def discover(raw_dir: Path, report: ValidationReport) -> list[Case]:
    """Shenzhen images with their manual masks (``subset="train"``) and Montgomery (``"test"``)."""
    return _shenzhen(raw_dir, report) + _montgomery(raw_dir, report)


LUNG_XRAY = Layout(
    "lung_xray",
    "Lung X-ray (Shenzhen → Montgomery)",
    discover,
    split="official",
    ratios=(0.8, 0.2, 0.0),
    modality="rgb",
)
