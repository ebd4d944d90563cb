"""Declarative transform pipelines shared by every bundle, loaded relative to the bundle root.

The pipelines (load, resize, SeRP dual view + MWL weight map, binarise) are defined once, as
MONAI config lists, in ``transforms/litenext_2d.json`` at the top of the repository. MONAI's
``%file#id`` macros would resolve that path against the *working directory*, so a bundle using
them only runs from the repository root. Bundles call :func:`load_pipeline` instead, which finds
the file without looking at the working directory: first ``<bundle_root>/transforms/`` (a packed,
self-contained bundle carries its copy there), then the repository's ``transforms/`` two levels
above ``bundles/<name>/``, then the ``transforms/`` of the source checkout this package is
installed from (``pip install -e .``), which serves a ``--bundle_root`` placed anywhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

__all__ = ["PIPELINE_FILE", "find_pipeline_file", "load_pipeline"]

#: The pipeline file, relative to a ``transforms/`` folder.
PIPELINE_FILE = "litenext_2d.json"
#: ``transforms/`` of the source checkout holding this package (exists for editable installs).
_CHECKOUT_TRANSFORMS = Path(__file__).resolve().parents[2] / "transforms"


def find_pipeline_file(bundle_root: str | os.PathLike, filename: str = PIPELINE_FILE) -> Path:
    """The pipeline file a bundle at ``bundle_root`` uses.

    Raises:
        FileNotFoundError: neither candidate exists (the message lists both).
    """
    root = Path(bundle_root).resolve()
    candidates = [root / "transforms" / filename]
    if len(root.parents) > 1:
        candidates.append(root.parents[1] / "transforms" / filename)
    candidates.append(_CHECKOUT_TRANSFORMS / filename)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no transform pipeline file {filename!r} for the bundle at {root}; looked for "
        + ", ".join(str(c) for c in candidates)
    )


def load_pipeline(
    name: str, bundle_root: str | os.PathLike, values: Mapping[str, Any], filename: str = PIPELINE_FILE
) -> list:
    """Instantiate pipeline ``name`` with its ``@`` references bound to ``values``.

    Args:
        name: a list in the pipeline file, e.g. ``"load_labelled"`` or ``"train_dual_view"``.
        bundle_root: the bundle folder (the config's ``@bundle_root``).
        values: what the pipeline refers to, e.g. ``{"modality": "grey", "in_channels": 1,
            "image_size": [256, 256], "augmentation": {...}, "mwl": {...}, "threshold": 0.5}``.
        filename: the pipeline file inside ``transforms/``.

    Returns:
        The list of transform objects, ready for ``Compose``.

    Raises:
        FileNotFoundError: no pipeline file (see :func:`find_pipeline_file`).
        KeyError: the file has no pipeline ``name``.
    """
    path = find_pipeline_file(bundle_root, filename)
    pipelines = json.loads(path.read_text(encoding="utf-8"))
    if name not in pipelines or name.startswith("_"):
        available = sorted(k for k in pipelines if not k.startswith("_"))
        raise KeyError(f"{path} has no pipeline {name!r}; it has {available}")
    parser = ConfigParser({**dict(values), name: pipelines[name]})
    return list(parser.get_parsed_content(name))
