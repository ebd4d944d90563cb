"""MONAI transforms: SeRP dual views, MWL weight maps, loading and normalisation."""

from __future__ import annotations
