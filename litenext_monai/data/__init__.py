"""Datasets: the built-in synthetic data, public dataset layouts, splits and validation."""

from __future__ import annotations

from .layouts import LAYOUTS, get_layout, list_layouts
from .prepare import PreparedDataset, prepare_dataset
from .splits import kfold_split, official_split, ratio_split, split_hash, verify_split_hash
from .validation import ValidationError, ValidationReport, validate_prepared

__all__ = [
    "LAYOUTS",
    "PreparedDataset",
    "ValidationError",
    "ValidationReport",
    "get_layout",
    "kfold_split",
    "list_layouts",
    "official_split",
    "prepare_dataset",
    "ratio_split",
    "split_hash",
    "validate_prepared",
    "verify_split_hash",
    "generate_synthetic_dataset",
]


def __getattr__(name: str):
    # Imported lazily so that `python -m litenext_monai.data.synthetic` does not find the module
    # already imported by its package (runpy warns about that).
    if name == "generate_synthetic_dataset":
        from .synthetic import generate_synthetic_dataset

        return generate_synthetic_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
