"""Ignite engines (MONAI workflows) for LiteNeXt training and evaluation."""

from __future__ import annotations

from litenext_monai.engines.metrics import PerImageMetricsSaver, per_image_metrics
from litenext_monai.engines.serp_trainer import SeRPTrainer

__all__ = ["PerImageMetricsSaver", "SeRPTrainer", "per_image_metrics"]
