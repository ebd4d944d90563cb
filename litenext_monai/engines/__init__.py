"""Ignite engines (MONAI workflows) for training and evaluation: the trainer, its handlers and metrics.

Names that lived here before the layout of 0.2 (checkpoint, MLflow, inference, export and
comparison helpers) are still importable from ``litenext_monai.engines`` for one release; they
are loaded on first use from their new homes (``litenext_monai.model``, ``litenext_monai.tracking``,
``litenext_monai.inference``, ``litenext_monai.experiments``) and warn once.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from litenext_monai.engines.bundle_utils import make_run_name, package_versions
from litenext_monai.engines.deep_training import DeepTrainingSlopeHandler, deep_training_slope
from litenext_monai.engines.handlers import (
    BestModelSaver,
    LastCheckpointHandler,
    LearningCurvePlotter,
    OverlaySaver,
    loss_components,
)
from litenext_monai.engines.metrics import PerImageMetricsSaver, per_image_metrics
from litenext_monai.engines.trainer import DEFAULT_LOSS_INPUTS, SegmentationTrainer

__all__ = [
    "BestModelSaver",
    "DEFAULT_LOSS_INPUTS",
    "DeepTrainingSlopeHandler",
    "LastCheckpointHandler",
    "LearningCurvePlotter",
    "OverlaySaver",
    "PerImageMetricsSaver",
    "SegmentationTrainer",
    "deep_training_slope",
    "loss_components",
    "make_run_name",
    "package_versions",
    "per_image_metrics",
]

#: Moved names: where each one lives now.
_MOVED = {
    "datalist_split_hash": "litenext_monai.data.splits",
    "inference_items": "litenext_monai.inference.inputs",
    "build_network": "litenext_monai.model.loader",
    "checkpoint_sha256": "litenext_monai.model.card",
    "network_config": "litenext_monai.model.card",
    "read_inference_settings": "litenext_monai.model.card",
    "write_inference_settings": "litenext_monai.model.card",
    "load_network_from_checkpoint": "litenext_monai.inference.loading",
    "deploy_on_load": "litenext_monai.model.export",
    "export_checkpoint": "litenext_monai.model.export",
    "BatchFailedError": "litenext_monai.inference.failures",
    "FailureReport": "litenext_monai.inference.failures",
    "MLflowLineage": "litenext_monai.tracking.models",
    "MLflowModelLogger": "litenext_monai.tracking.models",
    "checkpoint_lineage": "litenext_monai.tracking.models",
    "log_checkpoint_model": "litenext_monai.tracking.models",
    "log_datalist_inputs": "litenext_monai.tracking.models",
    "provenance_tags": "litenext_monai.tracking.models",
    "is_mlflow_model_uri": "litenext_monai.tracking.uris",
    "resolve_checkpoint": "litenext_monai.tracking.uris",
    "Predictor": "litenext_monai.inference.predictor",
    "segment_dicom_to_seg": "litenext_monai.inference.predictor",
    "load_inference_network": "litenext_monai.inference.volume",
    "segment_volume": "litenext_monai.inference.volume",
}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"litenext_monai.engines.{name} moved to {module}.{name}; the old name goes in the next release",
        DeprecationWarning,
        stacklevel=2,
    )
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
