"""GlaS (Warwick QU) gland segmentation: BMP images with instance-labelled ``_anno`` BMPs."""

from __future__ import annotations

import csv
from pathlib import Path

from ..validation import ValidationReport
from .base import Case, Layout, files_with_suffix, find_dir, image_loader, mask_loader, pair_by_stem

__all__ = ["GLAS"]


def _patients(root: Path) -> dict[str, str]:
    """Image name → patient ID from ``Grade.csv`` when the release includes it."""
    grade = root / "Grade.csv"
    if not grade.is_file():
        return {}
    with open(grade, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return {}
    header = [h.strip().lower() for h in rows[0]]
    if "name" not in header or "patient id" not in header:
        return {}
    name_col, patient_col = header.index("name"), header.index("patient id")
    return {r[name_col].strip(): f"patient{r[patient_col].strip()}" for r in rows[1:] if len(r) > patient_col}


def discover(raw_dir: Path, report: ValidationReport) -> list[Case]:
    """Cases ``train_N.bmp`` / ``testA_N.bmp`` / ``testB_N.bmp`` with ``*_anno.bmp`` instance masks."""
    root = (
        find_dir(raw_dir, ["Warwick QU Dataset (Released 2016_07_08)", "Warwick_QU_Dataset", "GlaS"])
        or raw_dir
    )
    files = files_with_suffix(root, [".bmp"])
    images = [p for p in files if not p.stem.endswith("_anno")]
    masks = [p for p in files if p.stem.endswith("_anno")]
    if not files:
        raise FileNotFoundError(f"{raw_dir}: no GlaS BMP files (train_*.bmp, testA_*.bmp, testB_*.bmp)")
    patients = _patients(root)
    cases = []
    for image, mask in pair_by_stem(images, masks, lambda s: s[: -len("_anno")], report):
        cases.append(
            Case(
                case_id=image.stem,
                load_image=image_loader(image),
                load_masks=mask_loader(mask),
                image_file=str(image),
                mask_files=[str(mask)],
                patient=patients.get(image.stem),
                subset="train" if image.stem.lower().startswith("train") else "test",
                mask_kind="instance",
            )
        )
    return cases


GLAS = Layout("glas", "GlaS gland segmentation (Warwick QU)", discover, split="official", modality="rgb")
