"""Small helpers that MONAI bundle configs call through ``$`` expressions.

They keep run bookkeeping (unique run names, the dataset's split hash, package versions) and the
choice of inference inputs out of the JSON, where they would be unreadable one-liners.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from litenext_monai.data.splits import split_hash
from litenext_monai.engines.distributed import broadcast_object, is_main_process, rank_and_world
from litenext_monai.engines.failures import BatchFailedError, FailureReport
from litenext_monai.engines.inference_inputs import list_inference_items
from litenext_monai.io import SUPPORTED_2D_SUFFIXES, atomic_write

__all__ = ["make_run_name", "datalist_split_hash", "package_versions", "inference_items"]

logger = logging.getLogger(__name__)


def make_run_name(prefix: str, state_file: str | os.PathLike | None = None, resume: bool = False) -> str:
    """Return a run name that is unique per launch, or the previous one when resuming.

    MONAI's ``MLFlowHandler`` attaches to the latest unfinished run when ``run_name`` is None, so a
    crashed run would swallow the next launch; a fresh name per launch prevents that. A resumed
    training must continue its own MLflow run, so its name is kept in ``state_file``.

    Args:
        prefix: first part of the name, e.g. ``"train"``.
        state_file: text file remembering the name for a later resume (written atomically).
        resume: reuse the name stored in ``state_file`` when it exists.

    Under ``torchrun`` (an initialised process group) rank 0 chooses the name and writes
    ``state_file``, and every rank receives the same name.

    Returns:
        ``f"{prefix}_{YYYYmmdd_HHMMSS}_{6 hex digits}"``, or the stored name.
    """
    name = None
    if is_main_process():
        if resume and state_file is not None and Path(state_file).is_file():
            name = Path(state_file).read_text(encoding="utf-8").strip() or None
        if name is None:
            name = f"{prefix}_{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}"
            if state_file is not None:
                atomic_write(state_file, lambda tmp: tmp.write_text(name + "\n", encoding="utf-8"))
    # Under torchrun rank 0 alone draws (and stores) the name; every rank logs under it.
    return broadcast_object(name)


def datalist_split_hash(datalist: str | os.PathLike) -> str:
    """Return the datalist's stored ``split_hash``, or :func:`litenext_monai.data.split_hash` of it.

    Raises:
        ValueError: the file cannot be read or is not a JSON object.
    """
    path = Path(datalist)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the datalist ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a datalist must be a JSON object with split lists")
    return str(data.get("split_hash") or split_hash(data))


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed version of each distribution (``"not installed"`` when absent)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


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
    """List the images to segment as dataset items (see :func:`~litenext_monai.engines.inference_inputs.list_inference_items`).

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
        rank, world = rank_and_world()
        names = names[rank::world]
    return [item for n in names for item in groups[n]]
