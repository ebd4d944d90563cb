"""BUSI breast ultrasound: benign, malignant and normal folders; several masks per image are merged."""

from __future__ import annotations

import re
from pathlib import Path

from ..validation import ValidationReport
from .base import Case, Layout, files_with_suffix, find_dir, image_loader, mask_loader

__all__ = ["BUSI"]

_MASK = re.compile(r"^(?P<image>.+?)_mask(_\d+)?$")
_NUMBER = re.compile(r"\((\d+)\)")


def discover(raw_dir: Path, report: ValidationReport) -> list[Case]:
    """Cases ``<class>/<class> (n).png`` with masks ``<class> (n)_mask.png``, ``…_mask_1.png``, …"""
    root = find_dir(raw_dir, ["Dataset_BUSI_with_GT"]) or raw_dir
    cases = []
    classes = [c for c in ("benign", "malignant", "normal") if (root / c).is_dir()]
    if not classes:
        raise FileNotFoundError(f"{raw_dir}: no benign/malignant/normal folders (BUSI layout)")
    for label in classes:
        files = files_with_suffix(root / label, [".png"])
        images = {p.stem: p for p in files if not _MASK.match(p.stem)}
        masks: dict[str, list[Path]] = {}
        for p in files:
            match = _MASK.match(p.stem)
            if match:
                masks.setdefault(match["image"], []).append(p)
        for stem, mask_files in sorted(masks.items()):
            if stem not in images:
                report.warning("mask_without_image", mask_files[0], "no matching image")
        for stem, image in sorted(images.items()):
            mask_files = masks.get(stem, [])
            if not mask_files:
                report.warning("image_without_mask", image, "no *_mask.png")
                continue
            number = _NUMBER.search(stem)
            case_id = f"{label}_{int(number.group(1)):04d}" if number else f"{label}_{stem.replace(' ', '_')}"
            cases.append(
                Case(
                    case_id,
                    image_loader(image),
                    mask_loader(*mask_files),
                    str(image),
                    [str(m) for m in mask_files],
                    extra={"class": label},
                )
            )
    return cases


BUSI = Layout("busi", "BUSI breast ultrasound", discover, modality="rgb")
