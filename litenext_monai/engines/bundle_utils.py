"""Small helpers that MONAI bundle configs call through ``$`` expressions.

They keep run bookkeeping (unique run names, the dataset's split hash, package versions) and the
choice of inference inputs out of the JSON, where they would be unreadable one-liners.
"""

from __future__ import annotations

import glob
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
from litenext_monai.io import SUPPORTED_2D_SUFFIXES, atomic_write, read_image

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

    Returns:
        ``f"{prefix}_{YYYYmmdd_HHMMSS}_{6 hex digits}"``, or the stored name.
    """
    if resume and state_file is not None and Path(state_file).is_file():
        stored = Path(state_file).read_text(encoding="utf-8").strip()
        if stored:
            return stored
    name = f"{prefix}_{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}"
    if state_file is not None:
        atomic_write(state_file, lambda tmp: tmp.write_text(name + "\n", encoding="utf-8"))
    return name


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


def _is_supported(path: str) -> bool:
    lower = path.lower()
    return os.path.isfile(path) and any(lower.endswith(s) for s in SUPPORTED_2D_SUFFIXES)


def inference_items(
    source: str | os.PathLike | Sequence[str],
    split: str = "test",
    base_dir: str | os.PathLike | None = None,
    check_readable: bool = True,
) -> list[dict[str, Any]]:
    """List the images to segment as ``[{"image": path}, ...]``.

    Args:
        source: a MONAI datalist (``.json``; ``split`` is read and relative paths are joined to
            ``base_dir``, default the datalist's folder), a folder (every supported 2D file in it,
            sorted), a glob pattern, or a list of file paths.
        split: datalist split to read.
        base_dir: folder that relative datalist paths are relative to.
        check_readable: read every file once first; unreadable ones (corrupt, truncated, an
            unsupported DICOM transfer syntax, …) are logged with their problem and skipped, so
            one bad file never stops the batch.

    Raises:
        ValueError: nothing to segment, or the datalist has no such split.
    """
    if not isinstance(source, (str, os.PathLike)):
        paths = [str(p) for p in source]
    elif str(source).lower().endswith(".json"):
        data = json.loads(Path(source).read_text(encoding="utf-8"))
        if split not in data:
            raise ValueError(f"{source}: the datalist has no split {split!r}; it has {sorted(data)}")
        root = Path(base_dir) if base_dir is not None else Path(source).parent
        paths = [str(root / item["image"]) for item in data[split]]
    elif os.path.isdir(source):
        paths = sorted(str(p) for p in Path(source).iterdir() if _is_supported(str(p)))
    else:
        paths = sorted(p for p in glob.glob(str(source)) if _is_supported(p))
    if not paths:
        raise ValueError(f"{source}: no supported images ({', '.join(SUPPORTED_2D_SUFFIXES)}) to segment")
    if check_readable:
        paths = _readable(paths)
        if not paths:
            raise ValueError(f"{source}: none of the images could be read (see the errors logged above)")
    return [{"image": p} for p in paths]


def _readable(paths: list[str]) -> list[str]:
    """Keep the files the image reader accepts; log every other one with its problem."""
    good = []
    for path in paths:
        try:
            read_image(path)
        except Exception as err:  # any unreadable input is skipped, never fatal for the batch
            logger.error("skipping %s: %s", path, err)
            continue
        good.append(path)
    return good
