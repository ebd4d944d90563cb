"""Datasets: the built-in synthetic data, public dataset layouts, splits and validation."""

from __future__ import annotations

from .layouts import LAYOUTS, get_layout, list_layouts
from .prepare import PreparedDataset, prepare_dataset
from .splits import kfold_split, official_split, ratio_split, split_hash, verify_split_hash
from .synthetic import generate_synthetic_dataset
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
