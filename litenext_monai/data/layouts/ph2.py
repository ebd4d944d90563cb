"""PH2 dermoscopy: one folder per image with ``_Dermoscopic_Image`` and ``_lesion`` BMP sub-folders."""

from __future__ import annotations

from pathlib import Path

from ..validation import ValidationReport
from .base import Case, Layout, files_with_suffix, find_dir, image_loader, mask_loader

__all__ = ["PH2"]


def discover(raw_dir: Path, report: ValidationReport) -> list[Case]:
    """Cases ``PH2 Dataset images/IMDnnn/IMDnnn_Dermoscopic_Image/IMDnnn.bmp`` + ``IMDnnn_lesion/IMDnnn_lesion.bmp``."""
    root = find_dir(raw_dir, ["PH2 Dataset images"])
    if root is None:
        raise FileNotFoundError(f"{raw_dir}: no 'PH2 Dataset images' folder (PH2 layout)")
    cases = []
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        name = case_dir.name
        image_dir, lesion_dir = case_dir / f"{name}_Dermoscopic_Image", case_dir / f"{name}_lesion"
        images = files_with_suffix(image_dir, [".bmp"]) if image_dir.is_dir() else []
        masks = files_with_suffix(lesion_dir, [".bmp"]) if lesion_dir.is_dir() else []
        if not images:
            if masks:
                report.warning("mask_without_image", masks[0], "no dermoscopic image")
            continue
        if not masks:
            report.warning("image_without_mask", images[0], "no lesion mask")
            continue
        cases.append(
            Case(name, image_loader(images[0]), mask_loader(masks[0]), str(images[0]), [str(masks[0])])
        )
    return cases


PH2 = Layout("ph2", "PH2 dermoscopy", discover)
