"""Declarative transform pipelines shared by every route, loaded without looking at the working directory.

The pipelines (load, resize, SeRP dual view + MWL weight map, logits to mask) are defined once, as
MONAI config lists, in ``transforms/litenext_2d.json`` at the top of the repository. The bundle
carries it in ``<bundle_root>/transforms/`` and the installed package in
``litenext_monai/resources/transforms/`` (both links to that one file in a checkout; copies in a
wheel or a packed bundle). MONAI's ``%file#id`` macros would resolve the path against the
*working directory*, so bundles call :func:`load_pipeline` instead, and so do the Predictor,
volume inference and the DICOM node: every route runs the same pre- and post-processing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

__all__ = ["PACKAGE_TRANSFORMS", "PIPELINE_FILE", "find_pipeline_file", "load_pipeline"]

#: The pipeline file, relative to a ``transforms/`` folder.
PIPELINE_FILE = "litenext_2d.json"
#: ``transforms/`` shipped inside the package (a link to the repository's ``transforms/`` in a checkout).
PACKAGE_TRANSFORMS = Path(__file__).resolve().parents[1] / "resources" / "transforms"


def find_pipeline_file(bundle_root: str | os.PathLike | None, filename: str = PIPELINE_FILE) -> Path:
    """The pipeline file a bundle at ``bundle_root`` uses (``None``: the one shipped in the package).

    A bundle's own ``transforms/`` comes first, then the package's.

    Raises:
        FileNotFoundError: no candidate exists (the message lists them).
    """
    candidates = []
    if bundle_root is not None:
        candidates.append(Path(bundle_root).resolve() / "transforms" / filename)
    candidates.append(PACKAGE_TRANSFORMS / filename)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"no transform pipeline file {filename!r}; looked for " + ", ".join(str(c) for c in candidates)
    )


def load_pipeline(
    name: str,
    bundle_root: str | os.PathLike | None,
    values: Mapping[str, Any],
    filename: str = PIPELINE_FILE,
) -> list:
    """Instantiate pipeline ``name`` with its ``@`` references bound to ``values``.

    Args:
        name: a list in the pipeline file, e.g. ``"load_labelled"`` or ``"train_dual_view"``.
        bundle_root: the bundle folder (the config's ``@bundle_root``); ``None`` for the package's copy.
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
