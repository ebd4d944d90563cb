"""2018 Data Science Bowl, stage 1 training set (nuclei; one folder per image, one PNG per nucleus)."""

from __future__ import annotations

from pathlib import Path

from ..validation import ValidationReport
from .base import Case, Layout, files_with_suffix, find_dir, image_loader, mask_loader

__all__ = ["DSB2018"]


def discover(raw_dir: Path, report: ValidationReport) -> list[Case]:
    """Cases of ``stage1_train/<id>/images/<id>.png`` with masks ``stage1_train/<id>/masks/*.png``."""
    root = find_dir(raw_dir, ["stage1_train"])
    if root is None:
        raise FileNotFoundError(f"{raw_dir}: no stage1_train folder (Data Science Bowl 2018 layout)")
    cases = []
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        image_dir, mask_dir = case_dir / "images", case_dir / "masks"
        images = files_with_suffix(image_dir, [".png"]) if image_dir.is_dir() else []
        if len(images) != 1:
            report.error("unreadable", case_dir, f"expected one PNG in images/, found {len(images)}")
            continue
        masks = files_with_suffix(mask_dir, [".png"]) if mask_dir.is_dir() else []
        if not masks:
            report.warning("image_without_mask", images[0], "no instance masks in masks/")
            continue
        cases.append(
            Case(
                case_id=case_dir.name,
                load_image=image_loader(images[0]),
                load_masks=mask_loader(*masks),
                image_file=str(images[0]),
                mask_files=[str(m) for m in masks],
            )
        )
    return cases


DSB2018 = Layout("dsb2018", "Data Science Bowl 2018 (stage1_train)", discover, modality="rgb")
