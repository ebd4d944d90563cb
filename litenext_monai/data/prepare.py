"""Convert a published dataset release into the standard layout the bundles read.

Standard layout written to ``OUT_DIR``::

    OUT_DIR/
      images/<case_id>.png | .jpg | .tif | .nii.gz
      masks/<case_id>.png | .nii.gz
      datalist.json            # MONAI datalist with the split and its hash
      split.json               # seed, split_hash, case ids per split
      validation_report.json   # every problem found, with file names

Raster images are re-encoded losslessly as PNG (JPEG files are copied byte for byte, to avoid a
second lossy encoding and a five-fold size increase; 16-bit colour goes to TIFF); masks become
8-bit PNG with values {0, 255}. Images that come from DICOM or NIfTI keep their geometry: image
and mask are written as 2D NIfTI with the source affine (mask ``uint8`` {0, 1}). Layouts that
read several classes (``mask_kind="labels"``, e.g. Sunnybrook with ``multiclass=True``) keep the
class values 0 .. N in both formats and record ``num_classes`` in the datalist. Nothing under
``RAW_DIR`` is ever written.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from litenext_monai.io import (
    atomic_write,
    load_pseudonym_secret,
    write_image_png,
    write_mask_png,
    write_nifti,
)
from litenext_monai.io import pseudonym_secret as use_pseudonym_secret
from litenext_monai.io.mask_writer import write_label_map_png

from .layouts import get_layout
from .layouts.base import Case, relative
from .splits import DEFAULT_RATIOS, SPLIT_KEYS, kfold_split, official_split, ratio_split, split_hash
from .validation import ValidationReport, check_duplicates, check_mask_values, pixel_hash

__all__ = ["PreparedDataset", "prepare_dataset", "make_split"]

_JPEG_SUFFIXES = (".jpg", ".jpeg")


@dataclass
class PreparedDataset:
    """Result of :func:`prepare_dataset`: the report and, unless validating only, the datalist path."""

    report: ValidationReport
    datalist_path: Path | None
    splits: dict[str, list[str]]


def _merge_masks(case: Case, masks: list[np.ndarray]) -> np.ndarray:
    if case.mask_kind == "labels":  # class label maps: the largest class wins where masks overlap
        return np.maximum.reduce([np.asarray(m) for m in masks]).astype(np.uint8)
    merged = np.zeros(masks[0].shape[:2], dtype=bool)
    for mask in masks:
        data = mask.any(axis=-1) if mask.ndim == 3 else mask
        if case.mask_kind == "lossy":
            scale = 255 if data.max(initial=0) > 1 else 1
            merged |= data > scale / 2
        else:
            merged |= data != 0
    return merged.astype(np.uint8)


def _load_case(
    case: Case, raw_dir: Path, report: ValidationReport
) -> tuple[np.ndarray, dict, np.ndarray] | None:
    """Read and check one case; record problems and return ``None`` when it must be dropped."""
    image_name = relative(case.image_file, raw_dir)
    try:
        image, meta = case.load_image()
    except Exception as err:  # any reader failure is this file's problem, never the whole dataset's
        report.error("unreadable", image_name, str(err) or type(err).__name__)
        return None
    try:
        masks = case.load_masks()
    except Exception as err:  # as above, for the masks
        report.error("unreadable", ", ".join(relative(m, raw_dir) for m in case.mask_files), str(err))
        return None
    if not masks:
        report.error("image_without_mask", image_name, "no mask")
        return None
    for mask, mask_file in zip(masks, case.mask_files, strict=False):
        mask_name = relative(mask_file, raw_dir)
        if mask.shape[:2] != image.shape[:2]:
            report.error(
                "size_mismatch", mask_name, f"mask {mask.shape[:2]} vs image {image.shape[:2]} ({image_name})"
            )
            return None
        check_mask_values(mask, mask_name, case.mask_kind, report)
    return image, meta, _merge_masks(case, masks)


def _write_case(case: Case, image: np.ndarray, meta: dict, mask: np.ndarray, out_dir: Path) -> dict:
    """Write one case in the standard layout; return its datalist entry."""
    affine = meta.get("affine")
    if affine is not None:
        image_rel, mask_rel = f"images/{case.case_id}.nii.gz", f"masks/{case.case_id}.nii.gz"
        write_nifti(np.asarray(image, dtype=np.float32), affine, out_dir / image_rel)
        write_nifti(mask.astype(np.uint8), affine, out_dir / mask_rel)
    else:
        source = Path(case.image_file)
        if source.suffix.lower() in _JPEG_SUFFIXES and source.is_file():
            image_rel = f"images/{case.case_id}.jpg"
            atomic_write(out_dir / image_rel, lambda tmp: shutil.copyfile(source, tmp))
        elif image.dtype == np.uint16 and image.ndim == 3:
            image_rel = f"images/{case.case_id}.tif"
            atomic_write(out_dir / image_rel, lambda tmp: tifffile.imwrite(tmp, image))
        else:
            image_rel = f"images/{case.case_id}.png"
            data = image if image.dtype in (np.uint8, np.uint16) else _to_uint8(image)
            write_image_png(data, out_dir / image_rel)
        mask_rel = f"masks/{case.case_id}.png"
        if case.mask_kind == "labels":
            write_label_map_png(mask.astype(np.uint8), out_dir / mask_rel)
        else:
            write_mask_png(mask, out_dir / mask_rel)
    entry = {
        "image": image_rel,
        "label": mask_rel,
        "case_id": case.case_id,
        "patient": case.patient or case.case_id,
    }
    entry.update(case.extra)
    return entry


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    data = image.astype(np.float64)
    low, high = float(data.min(initial=0)), float(data.max(initial=0))
    return np.round((data - low) / max(high - low, 1e-12) * 255).astype(np.uint8)


def make_split(
    cases: Sequence[Case],
    policy: str,
    ratios: Sequence[float],
    seed: int,
    n_folds: int | None = None,
    fold: int = 0,
) -> dict[str, list[str]]:
    """Split cases by patient with the layout's policy (``"ratio"`` or ``"official"``), or by k-fold.

    For k-fold, the test set is the published test set (official policy) or the ratio test set,
    and the remaining patients are cut into ``n_folds`` folds.
    """
    ids = [c.case_id for c in cases]
    groups = {c.case_id: c.patient or c.case_id for c in cases}
    if policy == "official":
        subsets = {c.case_id: c.subset or "train" for c in cases}
        base = official_split(subsets, ratios, seed, groups)
    elif policy == "ratio":
        base = ratio_split(ids, ratios, seed, groups)
    else:
        raise ValueError(f"unknown split policy {policy!r}; expected 'ratio' or 'official'")
    if n_folds is None:
        return base
    return kfold_split(ids, n_folds, fold, seed, groups, test_ids=base["test"])


def _write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def prepare_dataset(
    name: str,
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    seed: int = 0,
    ratios: Sequence[float] | None = None,
    split: str | None = None,
    n_folds: int | None = None,
    fold: int = 0,
    strict: bool = False,
    validate_only: bool = False,
    pseudonym_secret: str | bytes | None = None,
    **options: object,
) -> PreparedDataset:
    """Convert the release of dataset ``name`` found in ``raw_dir`` into the standard layout.

    Args:
        name: a registered layout (see :func:`litenext_monai.data.layouts.list_layouts`).
        raw_dir: the release as published (read only).
        out_dir: destination (created); may be ``None`` with ``validate_only``.
        seed: split seed.
        ratios: ``(training, validation, test)``; default: the layout's.
        split: ``"random"`` to ignore a published split, ``"official"`` to require it; default:
            the layout's policy.
        n_folds: when set, k-fold cross-validation; ``fold`` selects the validation fold.
        fold: fold index in ``0 .. n_folds-1``.
        strict: warnings are errors: nothing but images/masks is written when any problem exists
            and :class:`~litenext_monai.data.validation.ValidationError` is raised.
        validate_only: read and check everything, write nothing.
        pseudonym_secret: key of the DICOM patient pseudonyms (HMAC-SHA-256) in the datalist;
            default: the environment variable ``LITENEXT_PSEUDONYM_SECRET``, else the secret file
            ``OUT_DIR/.pseudonym_secret`` (created with mode 0600 on first use, never written into
            the datalist or a log). Keep it to get the same pseudonyms when preparing again.
        options: layout-specific options (e.g. ``axis`` for NIfTI volumes).

    Returns:
        :class:`PreparedDataset` with the report, the datalist path and the split.

    Raises:
        FileNotFoundError: ``raw_dir`` missing, or it does not hold the expected release.
        ValueError: bad arguments (e.g. ``out_dir`` inside ``raw_dir``).
        ValidationError: ``strict`` and problems were found, or no usable case at all.
    """
    layout = get_layout(name)
    raw_dir = Path(raw_dir).resolve()
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"{raw_dir}: raw dataset folder does not exist")
    out_path = None
    if not validate_only:
        if out_dir is None:
            raise ValueError("out_dir is required unless validate_only=True")
        out_path = Path(out_dir).resolve()
        if out_path == raw_dir or raw_dir in out_path.parents:
            raise ValueError(f"{out_path}: output must not be inside the raw dataset folder {raw_dir}")
    report = ValidationReport()
    with use_pseudonym_secret(load_pseudonym_secret(out_path, pseudonym_secret)):
        return _prepare(
            layout, name, raw_dir, out_path, report, seed, ratios, split, n_folds, fold, strict, options
        )


def _prepare(
    layout: Any,
    name: str,
    raw_dir: Path,
    out_path: Path | None,
    report: ValidationReport,
    seed: int,
    ratios: Sequence[float] | None,
    split: str | None,
    n_folds: int | None,
    fold: int,
    strict: bool,
    options: dict[str, object],
) -> PreparedDataset:
    """The body of :func:`prepare_dataset`, run with the dataset's pseudonym secret active."""
    cases = layout.discover(raw_dir, report, **options)
    policy = layout.split if split in (None, "default") else ("ratio" if split == "random" else split)
    if policy == "official" and split == "official" and not any(c.subset == "test" for c in cases):
        raise ValueError(f"{name}: no published test subset found under {raw_dir}")
    kept: list[Case] = []
    entries: dict[str, dict] = {}
    hashes: dict[str, str] = {}
    files: dict[str, str] = {}
    for case in cases:
        loaded = _load_case(case, raw_dir, report)
        if loaded is None:
            continue
        image, meta, mask = loaded
        if not mask.any():
            report.empty_masks.append(case.case_id)
        hashes[case.case_id] = pixel_hash(image)
        files[case.case_id] = relative(case.image_file, raw_dir)
        if out_path is not None:
            entries[case.case_id] = _write_case(case, image, meta, mask, out_path)
        kept.append(case)
    report.n_cases = len(kept)
    if not kept:
        report.error("no_cases", raw_dir, f"no usable {layout.title} case found")
        report.raise_if_failed()
    splits = make_split(kept, policy, tuple(ratios or layout.ratios or DEFAULT_RATIOS), seed, n_folds, fold)
    check_duplicates(hashes, splits, files, report)
    if strict:
        report.raise_if_failed(strict=True)
    if out_path is None:
        return PreparedDataset(report, None, splits)
    datalist = {
        "name": layout.name,
        "description": f"{layout.title}, converted by litenext_monai.data.prepare_dataset",
        "modality": layout.modality,
        "seed": seed,
        "split_policy": "kfold" if n_folds else policy,
        "n_folds": n_folds,
        "fold": fold if n_folds else None,
    }
    num_classes = max(case.num_classes for case in kept)
    if num_classes > 1:
        datalist["num_classes"] = num_classes
    for key in SPLIT_KEYS:
        datalist[key] = [entries[c] for c in splits[key]]
    datalist["split_hash"] = split_hash(datalist)
    _write_json(out_path / "datalist.json", datalist)
    _write_json(
        out_path / "split.json",
        {"seed": seed, "split_hash": datalist["split_hash"], **{k: splits[k] for k in SPLIT_KEYS}},
    )
    _write_json(out_path / "validation_report.json", report.to_dict())
    return PreparedDataset(report, out_path / "datalist.json", splits)
