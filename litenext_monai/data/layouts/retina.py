"""Retinal vessels: DRIVE (official 20/20 split) and CHASE_DB1 (two eyes per child)."""

from __future__ import annotations

import re
from pathlib import Path

from ..validation import ValidationReport
from .base import Case, Layout, files_with_suffix, find_dir, image_loader, mask_loader

__all__ = ["DRIVE", "CHASE_DB1"]

_LEADING_NUMBER = re.compile(r"^(\d+)_")
_CHASE_IMAGE = re.compile(r"^Image_(\d+)([LR])$", re.IGNORECASE)


def _drive_subset(folder: Path, subset: str, report: ValidationReport) -> list[Case]:
    image_dir, manual_dir = folder / "images", folder / "1st_manual"
    if not image_dir.is_dir():
        return []
    manuals = {}
    if manual_dir.is_dir():
        for p in files_with_suffix(manual_dir, [".gif", ".png", ".tif"]):
            match = _LEADING_NUMBER.match(p.name)
            if match:
                manuals[match.group(1)] = p
    cases = []
    for image in files_with_suffix(image_dir, [".tif", ".tiff", ".png"]):
        match = _LEADING_NUMBER.match(image.name)
        manual = manuals.pop(match.group(1), None) if match else None
        if manual is None:
            report.warning("image_without_mask", image, "no 1st_manual vessel annotation")
            continue
        cases.append(
            Case(
                image.stem, image_loader(image), mask_loader(manual), str(image), [str(manual)], subset=subset
            )
        )
    for manual in manuals.values():
        report.warning("mask_without_image", manual, "no matching image")
    return cases


def discover_drive(raw_dir: Path, report: ValidationReport) -> list[Case]:
    """``DRIVE/{training,test}/images/NN_*.tif`` with ``DRIVE/{training,test}/1st_manual/NN_manual1.gif``."""
    root = find_dir(raw_dir, ["DRIVE"]) or raw_dir
    if not (root / "training").is_dir():
        raise FileNotFoundError(f"{raw_dir}: no DRIVE training/ folder")
    return _drive_subset(root / "training", "train", report) + _drive_subset(root / "test", "test", report)


def discover_chase(raw_dir: Path, report: ValidationReport) -> list[Case]:
    """``Image_NN{L,R}.jpg`` with the first observer's ``Image_NN{L,R}_1stHO.png``; patient = child NN."""
    root = find_dir(raw_dir, ["CHASEDB1", "CHASE_DB1", "CHASEDB"]) or raw_dir
    cases = []
    images = [p for p in files_with_suffix(root, [".jpg", ".jpeg", ".png"]) if _CHASE_IMAGE.match(p.stem)]
    if not images:
        raise FileNotFoundError(f"{raw_dir}: no CHASE_DB1 Image_NNL/R files")
    for image in images:
        child = _CHASE_IMAGE.match(image.stem).group(1)
        manual = next((p for p in root.glob(f"{image.stem}_1stHO.*") if p.is_file()), None)
        if manual is None:
            report.warning("image_without_mask", image, "no _1stHO annotation")
            continue
        cases.append(
            Case(
                image.stem,
                image_loader(image),
                mask_loader(manual),
                str(image),
                [str(manual)],
                patient=f"child{child}",
            )
        )
    return cases


DRIVE = Layout("drive", "DRIVE retinal vessels", discover_drive, split="official")
CHASE_DB1 = Layout("chase_db1", "CHASE_DB1 retinal vessels", discover_chase)
