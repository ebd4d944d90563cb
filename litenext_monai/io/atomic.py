"""Atomic file writing: a reader never sees a half-written output."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["TEMP_PREFIX", "atomic_write", "fsync_path", "remove_stale_temporaries"]

_UMASK = os.umask(0)
os.umask(_UMASK)

#: Start of every temporary file name :func:`atomic_write` uses (hidden, and recognisably ours).
TEMP_PREFIX = ".litenext-tmp."


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[Path], None],
    *,
    fsync: bool = False,
    mode: int | None = None,
) -> Path:
    """Write ``path`` through a temporary file in the same folder, then rename it into place.

    Args:
        path: final destination; its parent folder is created when missing.
        write: called with the temporary path (which keeps the final suffix, so writers that
            choose the format from the suffix, such as PIL and nibabel, still work).
        fsync: flush the temporary file to disk before the rename and the folder after it, so
            that the file survives a power loss or a kernel crash once this returns (queues).
        mode: permission bits of the output (e.g. ``0o600`` for files holding patient data); the
            file has them before it appears under ``path``. ``None`` (default): those of any new
            file, ``0o666`` less the process umask read at import.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name must end like the destination (".nii.gz", ".png") because
    # nibabel and PIL pick the format from the suffix.
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        # mkstemp creates the file private (0600); give the output the permissions asked for, or
        # those of any new file.
        tmp_path.chmod((0o666 & ~_UMASK) if mode is None else mode)
        if fsync:
            fsync_path(tmp_path)
        os.replace(tmp_path, path)
        if fsync:
            fsync_path(path.parent)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def fsync_path(path: str | os.PathLike) -> None:
    """``fsync`` a file or a folder (a folder's entries: names created or renamed in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete the temporaries that an interrupted :func:`atomic_write` left in ``folder``.

    Only files named like ours (:data:`TEMP_PREFIX`) directly in ``folder`` are removed, so call
    this when no other writer is using the folder (e.g. when a batch starts).

    Returns:
        The number of files removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for stale in folder.glob(f"{TEMP_PREFIX}*"):
        if stale.is_file():
            stale.unlink(missing_ok=True)
            removed += 1
    return removed
