"""Ignite engines (MONAI workflows) for LiteNeXt training and evaluation."""

from __future__ import annotations

from litenext_monai.engines.bundle_utils import (
    datalist_split_hash,
    inference_items,
    make_run_name,
    package_versions,
)
from litenext_monai.engines.handlers import (
    BestModelSaver,
    LastCheckpointHandler,
    LearningCurvePlotter,
    OverlaySaver,
    loss_components,
)
from litenext_monai.engines.metrics import PerImageMetricsSaver, per_image_metrics
from litenext_monai.engines.serp_trainer import SeRPTrainer
from litenext_monai.engines.volume_inference import load_inference_network, segment_volume

__all__ = [
    "BestModelSaver",
    "LastCheckpointHandler",
    "LearningCurvePlotter",
    "OverlaySaver",
    "PerImageMetricsSaver",
    "SeRPTrainer",
    "datalist_split_hash",
    "inference_items",
    "load_inference_network",
    "loss_components",
    "make_run_name",
    "package_versions",
    "per_image_metrics",
    "segment_volume",
]
