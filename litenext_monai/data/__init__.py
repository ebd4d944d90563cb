"""Datasets: the built-in synthetic data, public dataset layouts, splits and validation."""

from __future__ import annotations
