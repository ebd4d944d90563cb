"""Atomic file writing: a reader never sees a half-written output."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Write ``path`` through a temporary file in the same folder, then rename it into place.

    Args:
        path: final destination; its parent folder is created when missing.
        write: called with the temporary path (which keeps the final suffix, so writers that
            choose the format from the suffix, such as PIL and nibabel, still work).

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name must end like the destination (".nii.gz", ".png") because
    # nibabel and PIL pick the format from the suffix.
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path
