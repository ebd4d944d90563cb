"""Files the installed package ships: the MONAI bundle and the transform pipelines.

In a checkout ``bundles/`` and ``transforms/`` here are links to the repository's top-level
folders; a wheel holds copies, so console scripts (``litenext-compare``) and the Predictor work
without a checkout.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BUNDLE_ROOT", "TRANSFORMS_DIR"]

#: The ``litenext_seg`` bundle (``configs/train.json`` and its overlays).
BUNDLE_ROOT = Path(__file__).resolve().parent / "bundles" / "litenext_seg"
#: The declarative transform pipelines (``litenext_2d.json``).
TRANSFORMS_DIR = Path(__file__).resolve().parent / "transforms"
