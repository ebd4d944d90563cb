"""MONAI transforms: SeRP dual views, MWL weight maps, loading (images, masks, label maps) and normalisation."""

from __future__ import annotations

from litenext_monai.transforms.dual_view import DualViewd
from litenext_monai.transforms.io import LoadImage2D, LoadImage2Dd
from litenext_monai.transforms.label_map import LoadLabelMap2D, LoadLabelMap2Dd
from litenext_monai.transforms.pipelines import find_pipeline_file, load_pipeline
from litenext_monai.transforms.weight_map import MarginalWeightMap, MarginalWeightMapd

__all__ = [
    "DualViewd",
    "LoadImage2D",
    "LoadImage2Dd",
    "LoadLabelMap2D",
    "LoadLabelMap2Dd",
    "MarginalWeightMap",
    "MarginalWeightMapd",
    "find_pipeline_file",
    "load_pipeline",
]
