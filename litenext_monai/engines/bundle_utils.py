"""Small helpers that MONAI bundle configs call through ``$`` expressions.

They keep run bookkeeping (unique run names, the dataset's split hash, package versions) and the
choice of inference inputs out of the JSON, where they would be unreadable one-liners.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import ignite.distributed as idist

from litenext_monai.data.splits import datalist_split_hash
from litenext_monai.inference.inputs import inference_items
from litenext_monai.io import atomic_write

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
    if idist.get_rank() == 0:
        if resume and state_file is not None and Path(state_file).is_file():
            name = Path(state_file).read_text(encoding="utf-8").strip() or None
        if name is None:
            name = f"{prefix}_{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}"
            if state_file is not None:
                atomic_write(state_file, lambda tmp: tmp.write_text(name + "\n", encoding="utf-8"))
    # Under torchrun rank 0 alone draws (and stores) the name; every rank logs under it.
    return idist.broadcast(name, src=0, safe_mode=True)


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed version of each distribution (``"not installed"`` when absent)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
