"""The validation pass: every problem of a dataset, each with the file it concerns.

Problems found while preparing a raw release (see :mod:`litenext_monai.data.prepare`) and while
checking a prepared folder (:func:`validate_prepared`) are collected in one
:class:`ValidationReport`. Errors drop the affected case; warnings keep it; ``strict`` treats
warnings as errors. Empty masks are counted and allowed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from litenext_monai.io import read_image

from .splits import SPLIT_KEYS, split_hash

__all__ = [
    "Issue",
    "ValidationReport",
    "ValidationError",
    "pixel_hash",
    "check_mask_values",
    "check_duplicates",
    "validate_prepared",
]

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass(frozen=True)
class Issue:
    """One problem: ``level`` (error/warning/info), ``kind`` (a stable code), ``file`` and a message."""

    level: str
    kind: str
    file: str
    message: str


class ValidationError(RuntimeError):
    """Raised when a dataset fails validation; carries the :class:`ValidationReport`."""

    def __init__(self, report: ValidationReport, strict: bool) -> None:
        self.report = report
        super().__init__(report.format(strict=strict))


@dataclass
class ValidationReport:
    """Problems found in a dataset.

    Attributes:
        issues: every problem, in discovery order.
        n_cases: cases that passed and were kept.
        empty_masks: case ids whose mask has no foreground (allowed, counted).
    """

    issues: list[Issue] = field(default_factory=list)
    n_cases: int = 0
    empty_masks: list[str] = field(default_factory=list)

    def add(self, level: str, kind: str, file: str | os.PathLike, message: str) -> None:
        """Record a problem."""
        self.issues.append(Issue(level, kind, str(file), message))

    def error(self, kind: str, file: str | os.PathLike, message: str) -> None:
        """Record a problem that drops the case."""
        self.add(ERROR, kind, file, message)

    def warning(self, kind: str, file: str | os.PathLike, message: str) -> None:
        """Record a problem that keeps the case (an error under ``strict``)."""
        self.add(WARNING, kind, file, message)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.level == ERROR]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.level == WARNING]

    def counts(self) -> dict[str, int]:
        """Number of issues per ``kind``."""
        out: dict[str, int] = {}
        for issue in self.issues:
            out[issue.kind] = out.get(issue.kind, 0) + 1
        return out

    def ok(self, strict: bool = False) -> bool:
        """No errors (and, when ``strict``, no warnings)."""
        return not self.errors and not (strict and self.warnings)

    def raise_if_failed(self, strict: bool = False) -> None:
        """Raise :class:`ValidationError` unless :meth:`ok`."""
        if not self.ok(strict):
            raise ValidationError(self, strict)

    def format(self, strict: bool = False) -> str:
        """Human-readable report: one line per issue, then a summary."""
        lines = []
        for issue in self.issues:
            level = ERROR if (strict and issue.level == WARNING) else issue.level
            lines.append(f"{level.upper():7s} {issue.kind}: {issue.file}: {issue.message}")
        lines.append(
            f"{self.n_cases} cases kept, {len(self.errors)} errors, {len(self.warnings)} warnings, "
            f"{len(self.empty_masks)} empty masks"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {
            "n_cases": self.n_cases,
            "empty_masks": sorted(self.empty_masks),
            "counts": self.counts(),
            "issues": [asdict(i) for i in self.issues],
        }


def pixel_hash(array: np.ndarray) -> str:
    """SHA-256 of an image's decoded pixels and shape: equal for identical images in any format."""
    data = np.ascontiguousarray(array)
    digest = hashlib.sha256(str((data.shape, data.dtype.str)).encode("utf-8"))
    digest.update(data.tobytes())
    return digest.hexdigest()


def check_mask_values(mask: np.ndarray, file: str | os.PathLike, kind: str, report: ValidationReport) -> None:
    """Warn when a stored mask has values its kind does not allow.

    ``kind``: ``"binary"`` (at most one non-zero value), ``"instance"`` or ``"labels"``
    (non-negative integers) or ``"lossy"`` (JPEG masks: intermediate values are expected and
    thresholded, nothing to check).
    """
    if kind == "lossy":
        return
    values = np.unique(mask)
    if kind == "binary":
        if len(values[values != 0]) > 1 or (mask.ndim == 3 and not _channels_equal(mask)):
            shown = values[:8].tolist()
            report.warning(
                "unexpected_mask_values",
                file,
                f"binary mask holds values {shown}{' …' if len(values) > 8 else ''}; any non-zero value is foreground",
            )
    elif kind in ("instance", "labels"):
        if values.size and (values.min() < 0 or not np.issubdtype(mask.dtype, np.integer)):
            report.warning("unexpected_mask_values", file, f"{kind} mask with values {values[:8].tolist()}")
    else:
        raise ValueError(f"unknown mask kind {kind!r}")


def _channels_equal(mask: np.ndarray) -> bool:
    return all(np.array_equal(mask[..., 0], mask[..., c]) for c in range(1, mask.shape[-1]))


def check_duplicates(
    hashes: Mapping[str, str],
    splits: Mapping[str, Iterable[str]],
    files: Mapping[str, str],
    report: ValidationReport,
) -> None:
    """Report images whose pixels are identical: across splits (leakage) and within one split."""
    where = {case: key for key in SPLIT_KEYS for case in splits.get(key, [])}
    by_hash: dict[str, list[str]] = {}
    for case, digest in hashes.items():
        if case in where:
            by_hash.setdefault(digest, []).append(case)
    for cases in by_hash.values():
        if len(cases) < 2:
            continue
        cases = sorted(cases)
        keys = sorted({where[c] for c in cases})
        names = ", ".join(files.get(c, c) for c in cases)
        if len(keys) > 1:
            report.warning(
                "duplicate_across_splits",
                files.get(cases[0], cases[0]),
                f"identical images in {keys}: {names}",
            )
        else:
            report.warning("duplicate_image", files.get(cases[0], cases[0]), f"identical images: {names}")


def _stem(name: str) -> str:
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def validate_prepared(folder: str | os.PathLike, strict: bool = False) -> ValidationReport:
    """Check a folder in the standard layout (``images/``, ``masks/``, ``datalist.json``).

    Reports images without masks and masks without images (by file stem), files listed in the
    datalist that are missing or unreadable, image/mask size mismatches, masks with values other
    than {0, 1} or {0, 255} (or, when the datalist records ``num_classes`` = N ≥ 2, other than
    the class values 0 .. N), empty masks (counted), identical images across or within splits,
    and a stored ``split_hash`` that does not match the datalist.

    Args:
        folder: the prepared dataset folder.
        strict: raise :class:`ValidationError` on any error or warning; otherwise only report.
    """
    folder = Path(folder)
    report = ValidationReport()
    images = {_stem(p.name): p for p in sorted((folder / "images").glob("*")) if p.is_file()}
    masks = {_stem(p.name): p for p in sorted((folder / "masks").glob("*")) if p.is_file()}
    for stem in sorted(set(images) - set(masks)):
        report.warning("image_without_mask", images[stem], "no mask with this name in masks/")
    for stem in sorted(set(masks) - set(images)):
        report.warning("mask_without_image", masks[stem], "no image with this name in images/")
    datalist_path = folder / "datalist.json"
    if not datalist_path.is_file():
        report.error("not_found", datalist_path, "datalist.json is missing")
        if strict:
            report.raise_if_failed(strict=True)
        return report
    datalist = json.loads(datalist_path.read_text(encoding="utf-8"))
    if "split_hash" in datalist and datalist["split_hash"] != split_hash(datalist):
        report.error(
            "split_hash_mismatch", datalist_path, "stored split_hash does not match the datalist content"
        )
    hashes: dict[str, str] = {}
    files: dict[str, str] = {}
    splits: dict[str, list[str]] = {key: [] for key in SPLIT_KEYS}
    num_classes = int(datalist.get("num_classes") or 1)
    class_values = set(range(num_classes + 1))
    for key in SPLIT_KEYS:
        for entry in datalist.get(key, []):
            case = str(entry.get("case_id", entry["image"]))
            image_file = folder / entry["image"]
            try:
                image, _ = read_image(image_file)
            except (OSError, ValueError) as err:
                report.error("unreadable", image_file, str(err))
                continue
            if "label" not in entry:
                report.error("image_without_mask", image_file, f"datalist entry in {key!r} has no label")
                continue
            mask_file = folder / entry["label"]
            try:
                mask, _ = read_image(mask_file, as_label=True)
            except (OSError, ValueError) as err:
                report.error("unreadable", mask_file, str(err))
                continue
            if image.shape[:2] != mask.shape[:2]:
                report.error("size_mismatch", mask_file, f"mask {mask.shape[:2]} vs image {image.shape[:2]}")
                continue
            values = set(np.unique(mask).tolist())
            if num_classes > 1 and not values <= class_values:
                report.warning(
                    "unexpected_mask_values",
                    mask_file,
                    f"values {sorted(values)[:8]}; expected class values 0..{num_classes}",
                )
            elif num_classes == 1 and not (values <= {0, 1} or values <= {0, 255}):
                report.warning(
                    "unexpected_mask_values",
                    mask_file,
                    f"values {sorted(values)[:8]}; expected {{0, 1}} or {{0, 255}}",
                )
            if not np.any(mask):
                report.empty_masks.append(case)
            hashes[case] = pixel_hash(image)
            files[case] = str(image_file)
            splits[key].append(case)
            report.n_cases += 1
    check_duplicates(hashes, splits, files, report)
    if strict:
        report.raise_if_failed(strict=True)
    return report
