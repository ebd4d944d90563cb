"""What folder inference segments, what it writes for each input, and what it cannot do.

:func:`list_inference_items` turns a folder (searched at any depth), a glob, a datalist split or a
list of files into the items of the inference dataset. Every input ends up either as an item or
as a row of the :class:`~litenext_monai.engines.FailureReport`, never silently dropped:

* raster images (PNG, JPEG, BMP, TIFF, GIF) and NIfTI are items of their own;
* DICOM files (by suffix or by the ``DICM`` marker, so suffix-less series files count) are
  grouped by Series Instance UID; a series of several instances is ordered by position and, with
  DICOM SEG output, becomes ONE multi-frame SEG (its slices are items that share an output);
* an unknown suffix, an unreadable or truncated file, a DICOM object without pixels (SR, RT
  Plan), NaN or infinite pixels, or ``dicom-seg`` asked for a non-DICOM input is a failure with
  its reason.

Output names: ``<stem>_mask.png``, ``<stem>_mask.nii.gz`` or ``<stem>_seg.dcm`` (a series is
named after its folder). When two inputs would get the same output file (``a.png`` and
``a.jpg``), each of them gets its suffix in the name instead (``a_png_mask.png``,
``a_jpg_mask.png``), and a counter if that still collides, so no output overwrites another.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import numpy as np
import pydicom
from pydicom.dataset import Dataset

from litenext_monai.inference.failures import BatchFailedError, FailureReport
from litenext_monai.io import (
    OUTPUT_FORMATS,
    OUTPUT_SUFFIXES,
    SUPPORTED_2D_SUFFIXES,
    is_dicom,
    is_image_2d,
    is_nifti,
    output_format_for,
    read_image,
)
from litenext_monai.io.dicom_seg import deduplicate_instances, position_order, read_sop_instance_uid

__all__ = ["inference_items", "list_inference_items"]

logger = logging.getLogger(__name__)

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _kind(path: Path) -> str | None:
    if is_nifti(path):
        return "nifti"
    if is_image_2d(path):
        return "raster"
    if is_dicom(path):
        return "dicom"
    return None


def _collect(
    source: str | os.PathLike | Sequence[str],
    split: str,
    base_dir: str | os.PathLike | None,
    exclude: Sequence[Path],
) -> tuple[list[Path], Path | None]:
    """The input paths and the folder that names are relative to."""
    if not isinstance(source, (str, os.PathLike)):
        return [Path(p) for p in source], None
    if str(source).lower().endswith(".json"):
        data = json.loads(Path(source).read_text(encoding="utf-8"))
        if split not in data:
            raise ValueError(f"{source}: the datalist has no split {split!r}; it has {sorted(data)}")
        root = Path(base_dir) if base_dir is not None else Path(source).parent
        return [root / item["image"] for item in data[split]], root
    if os.path.isdir(source):
        root = Path(source)
        excluded = [e.resolve() for e in exclude]
        paths = []
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = sorted(
                d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in excluded
            )
            paths += [here / f for f in sorted(filenames) if not f.startswith(".")]
        return paths, root
    return [Path(p) for p in sorted(glob.glob(str(source), recursive=True)) if os.path.isfile(p)], None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.suffix else name


def _safe(name: str) -> str:
    return _NAME_UNSAFE.sub("_", name).strip("._") or "input"


def _tag(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return "nii_gz"
    return _safe(path.suffix.lstrip(".").lower()) or "file"


def _check_pixels(path: Path) -> None:
    """Read the file as the pipeline will; raise ``ValueError`` for unreadable or non-finite pixels."""
    array, _ = read_image(path)
    if np.issubdtype(np.asarray(array).dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError(f"{path}: the image contains NaN or infinite pixel values; nothing was segmented")


def _dicom_header(path: Path) -> Dataset:
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as err:  # pydicom raises many types for damaged files
        raise ValueError(f"{path}: unreadable or truncated DICOM file ({err})") from err
    if "Rows" not in ds or "Columns" not in ds:
        sop = ds.get("SOPClassUID")
        name = getattr(sop, "name", "")
        if sop is not None and name != str(sop) and "Image" not in name:
            raise ValueError(f"{path}: a DICOM object without an image ({name}); nothing to segment")
        raise ValueError(f"{path}: truncated or incomplete DICOM file (its header has no image size)")
    return ds


def _partial_series_uid(path: Path) -> str:
    """The Series Instance UID of a damaged DICOM file, when its header got that far."""
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
        return str(ds.get("SeriesInstanceUID", "") or "")
    except Exception:  # nothing readable: the file is reported on its own
        return ""


class _Namer:
    """Unique output file names: the stem, the stem with its suffix tag on a collision, then a counter."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, str, str, str]] = []

    def request(self, index: int, stem: str, tag: str, fmt: str) -> None:
        self.requests.append((index, _safe(stem), tag, fmt))

    def resolve(self) -> dict[int, str]:
        counts: dict[str, int] = defaultdict(int)
        for _, stem, _, fmt in self.requests:
            counts[(stem + OUTPUT_SUFFIXES[fmt]).lower()] += 1
        names: dict[int, str] = {}
        used: set[str] = set()
        for index, stem, tag, fmt in self.requests:
            name = stem if counts[(stem + OUTPUT_SUFFIXES[fmt]).lower()] == 1 else f"{stem}_{tag}"
            candidate, k = name, 2
            while (candidate + OUTPUT_SUFFIXES[fmt]).lower() in used:
                candidate, k = f"{name}_{k}", k + 1
            used.add((candidate + OUTPUT_SUFFIXES[fmt]).lower())
            names[index] = candidate + OUTPUT_SUFFIXES[fmt]
        return names


def _drop_duplicates(
    series: dict[str, list[tuple[Path, Dataset]]],
    broken: dict[str, list[tuple[Path, str]]],
    orphans: Sequence[tuple[Path, str]] = (),
) -> list[tuple[Path, str]]:
    """Keep one readable file per SOP Instance UID in each series, in place, with a warning.

    A truncated copy of an instance (unreadable header, or pixel data cut short) never takes its
    series down when a complete copy of the same instance is there. ``orphans`` (unreadable files
    whose series is unknown) that are copies of a series member are dropped the same way.

    Returns:
        The orphans that are no duplicate, with their reasons (failures of their own).
    """
    known: dict[str, Path] = {}
    for members in series.values():
        for path, header in members:
            known.setdefault(str(header.get("SOPInstanceUID", "")), path)
    left = []
    for path, reason in orphans:
        twin = known.get(read_sop_instance_uid(path) or "")
        if twin is None:
            left.append((path, reason))
            continue
        message = (
            f"{path}: duplicate SOP Instance UID of {twin}; segmenting the readable copy {twin.name} once"
        )
        warnings.warn(message, stacklevel=3)
        logging.getLogger(__name__).warning(message)
    for uid in set(series) | set(broken):
        members = series.get(uid, [])
        unreadable = broken.get(uid, [])
        uids = [str(h.get("SOPInstanceUID", "")) for _, h in members]
        if not unreadable and len(set(uids)) == len(uids):
            continue  # the usual case: no duplicate, nothing more to read
        paths = [p for p, _ in members] + [p for p, _ in unreadable]
        kept, dropped = deduplicate_instances(paths)
        if not dropped:
            continue
        gone = {p for p, _ in dropped}
        series[uid] = [(p, h) for p, h in members if p not in gone]
        broken[uid] = [(p, r) for p, r in unreadable if p not in gone]
        if not broken[uid]:
            del broken[uid]
        if not series[uid]:
            del series[uid]
    return left


def list_inference_items(
    source: str | os.PathLike | Sequence[str],
    split: str = "test",
    base_dir: str | os.PathLike | None = None,
    *,
    output_format: str = "auto",
    failures: FailureReport | None = None,
    check_readable: bool = True,
    exclude: Sequence[str | os.PathLike] = (),
) -> list[dict[str, Any]]:
    """List the inputs to segment as dataset items, recording every input that cannot be done.

    Args:
        source: a folder (searched at any depth; hidden files and ``exclude`` skipped), a MONAI
            datalist (``.json``; ``split`` read, relative paths joined to ``base_dir``), a glob
            pattern, or a list of files.
        split: datalist split.
        base_dir: folder of relative datalist paths (default: the datalist's folder).
        output_format: one of :data:`OUTPUT_FORMATS`.
        failures: where failed inputs are recorded (a new report when ``None``); its ``total`` is
            increased by the number of inputs.
        check_readable: read every image once first, so unreadable files and NaN/Inf pixels are
            failures here instead of crashing the batch later.
        exclude: folders not to search (the prediction folder when it lies inside the input).

    Returns:
        ``[{"image", "output_name", "output_format", "series", "series_index", "series_size"}]``
        in segmentation order: ``series`` is ``""`` for an input written on its own; the slices
        of a series share ``output_name`` and come in position order.

    Raises:
        ValueError: an unknown ``output_format`` or datalist split.
    """
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output_format {output_format!r}; expected one of {OUTPUT_FORMATS}")
    report = failures if failures is not None else FailureReport(".")
    paths, root = _collect(source, split, base_dir, [Path(e) for e in exclude])
    report.total += len(paths)

    singles: list[Path] = []
    series: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    broken: dict[str, list[tuple[Path, str]]] = defaultdict(list)
    orphans: list[tuple[Path, str]] = []  # unreadable files whose series is unknown
    for path in paths:
        if not path.is_file():
            report.add(path, "no such file")
            continue
        kind = _kind(path)
        if kind is None:
            report.add(
                path, f"unsupported file type {path.suffix or '(no suffix)'!r}; not an image this tool reads"
            )
            continue
        if output_format == "dicom-seg" and kind != "dicom":
            report.add(path, "dicom-seg output needs a DICOM input; use --output_format auto, png or nifti")
            continue
        if kind != "dicom" or output_format_for(path, output_format) != "dicom-seg":
            singles.append(path)
            continue
        try:
            header = _dicom_header(path)
        except ValueError as err:
            uid = _partial_series_uid(path)
            if uid:  # a truncated slice takes its series down with it (a SEG must cover every slice)
                broken[uid].append((path, str(err)))
            else:
                orphans.append((path, str(err)))
            continue
        uid = str(header.get("SeriesInstanceUID", "") or "") or f"file:{path}"
        series[uid].append((path, header))
    for path, reason in _drop_duplicates(series, broken, orphans):
        report.add(path, reason)
    for uid, bad_members in broken.items():
        for path, reason in bad_members:
            report.add(path, reason)
        for path, _ in series.pop(uid, []):
            report.add(
                path,
                f"not segmented: {bad_members[0][0].name} of the same DICOM series failed, so no SEG was written",
            )

    def readable(path: Path) -> bool:
        if not check_readable:
            return True
        try:
            _check_pixels(path)
        except Exception as err:  # any unreadable input is a failure of that input only
            report.add(path, str(err))
            return False
        return True

    entries: list[dict[str, Any]] = []
    namer = _Namer()
    for path in singles:
        if readable(path):
            fmt = output_format_for(path, output_format)
            namer.request(len(entries), _stem(path), _tag(path), fmt)
            entries.append(
                {"image": str(path), "output_format": fmt, "series": "", "series_index": 0, "series_size": 1}
            )

    folders: dict[Path, list[str]] = defaultdict(list)
    for uid, members in series.items():
        if len(members) > 1:
            folders[members[0][0].parent].append(uid)
    for uid, members in sorted(series.items(), key=lambda item: str(item[1][0][0])):
        order = position_order([h for _, h in members])
        files = [members[i][0] for i in order]
        bad = [f for f in files if not readable(f)]
        if bad:
            for f in files:
                if f not in bad:
                    report.add(
                        f,
                        f"not segmented: {bad[0].name} of the same DICOM series failed, so no SEG was written",
                    )
            continue
        if len(files) == 1:
            stem, tag = _stem(files[0]), _tag(files[0])
        else:
            folder = files[0].parent
            relative = (
                folder.relative_to(root)
                if root is not None and folder.is_relative_to(root)
                else Path(folder.name)
            )
            stem = "_".join(relative.parts) or (root.name if root is not None else "series")
            siblings = folders[folder]
            if len(siblings) > 1:
                stem += f"_series{sorted(siblings).index(uid) + 1}"
            tag = "series"
        index = len(entries)
        namer.request(index, stem, tag, "dicom-seg")
        key = f"series{index}" if len(files) > 1 else ""
        for k, f in enumerate(files):
            entries.append(
                {
                    "image": str(f),
                    "output_format": "dicom-seg",
                    "series": key,
                    "series_index": k,
                    "series_size": len(files),
                    "_name_of": index,
                }
            )

    names = namer.resolve()
    for position, entry in enumerate(entries):
        entry["output_name"] = names[entry.pop("_name_of", position)]
    return entries


def inference_items(
    source: str | os.PathLike | Sequence[str],
    split: str = "test",
    base_dir: str | os.PathLike | None = None,
    check_readable: bool = True,
    *,
    output_format: str = "auto",
    failures: FailureReport | None = None,
    exclude: Sequence[str | os.PathLike] = (),
    skip_existing: str | os.PathLike | None = None,
    shard: bool = False,
) -> list[dict[str, Any]]:
    """List the images to segment as dataset items (see :func:`~litenext_monai.inference.inputs.list_inference_items`).

    Every input that cannot be segmented (unknown suffix, unreadable, NaN/Inf pixels, ...) is
    logged and recorded in ``failures``; one bad file never stops the batch.

    Args:
        source: a datalist (``.json``), a folder (searched at any depth), a glob, or a list of files.
        split: datalist split to read.
        base_dir: folder that relative datalist paths are relative to.
        check_readable: read every file once first, so unreadable ones are failures, not crashes.
        output_format: ``auto``, ``png``, ``nifti`` or ``dicom-seg``.
        failures: the batch's failure report.
        exclude: folders not to search.
        skip_existing: a prediction folder; inputs whose output is already there are left out
            (logged with their count), so a crashed archive job resumes where it stopped.
        shard: under ``torchrun``, keep only this rank's share. Whole outputs are dealt out (the
            slices of a DICOM series stay on one rank), by position in the listing, which every
            rank computes identically, so each output is written by exactly one rank.

    Raises:
        ValueError: nothing to segment at all, or the datalist has no such split.
        BatchFailedError: there were inputs but none could be segmented (``failures.csv`` is
            written first).
    """
    report = failures if failures is not None else FailureReport(".")
    items = list_inference_items(
        source,
        split,
        base_dir,
        output_format=output_format,
        failures=report,
        check_readable=check_readable,
        exclude=exclude,
    )
    if items:
        return _select(items, skip_existing, shard)
    if not report.total:
        raise ValueError(f"{source}: no images ({', '.join(SUPPORTED_2D_SUFFIXES)} or DICOM) to segment")
    if failures is not None:
        failures.write()
    raise BatchFailedError(
        f"{source}: none of the {report.total} inputs could be segmented"
        + (f"; see {failures.path}" if failures is not None else "")
        + ". "
        + "; ".join(f"{Path(p).name}: {r}" for p, r in report.failures[:3])
    )


def _select(
    items: list[dict[str, Any]], skip_existing: str | os.PathLike | None, shard: bool
) -> list[dict[str, Any]]:
    """Drop the outputs that exist already, then keep this rank's share of whole outputs."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        groups.setdefault(item["output_name"], []).append(item)
    names = list(groups)
    if skip_existing is not None:
        done = [n for n in names if (Path(skip_existing) / n).exists()]
        if done:
            logger.info("skipping %d input(s) whose output already exists in %s", len(done), skip_existing)
        names = [n for n in names if n not in set(done)]
    if shard:
        rank, world = idist.get_rank(), idist.get_world_size()
        names = names[rank::world]
    return [item for n in names for item in groups[n]]
