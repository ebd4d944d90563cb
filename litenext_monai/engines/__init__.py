"""Ignite engines (MONAI workflows) for LiteNeXt training and evaluation."""

from __future__ import annotations

from litenext_monai.engines.bundle_utils import (
    datalist_split_hash,
    inference_items,
    make_run_name,
    package_versions,
)
from litenext_monai.engines.checkpoint import (
    build_network,
    checkpoint_sha256,
    load_network_from_checkpoint,
    network_config,
    read_inference_settings,
    write_inference_settings,
)
from litenext_monai.engines.deep_training import DeepTrainingSlopeHandler, deep_training_slope
from litenext_monai.engines.export import deploy_on_load, export_checkpoint
from litenext_monai.engines.failures import BatchFailedError, FailureReport
from litenext_monai.engines.handlers import (
    BestModelSaver,
    LastCheckpointHandler,
    LearningCurvePlotter,
    OverlaySaver,
    loss_components,
)
from litenext_monai.engines.metrics import PerImageMetricsSaver, per_image_metrics
from litenext_monai.engines.mlflow_models import (
    MLflowLineage,
    MLflowModelLogger,
    checkpoint_lineage,
    is_mlflow_model_uri,
    log_checkpoint_model,
    log_datalist_inputs,
    provenance_tags,
    resolve_checkpoint,
)
from litenext_monai.engines.predictor import Predictor, segment_dicom_to_seg
from litenext_monai.engines.trainer import DEFAULT_LOSS_INPUTS, SegmentationTrainer
from litenext_monai.engines.volume_inference import load_inference_network, segment_volume

__all__ = [
    "BestModelSaver",
    "LastCheckpointHandler",
    "LearningCurvePlotter",
    "OverlaySaver",
    "PerImageMetricsSaver",
    "SegmentationTrainer",
    "DEFAULT_LOSS_INPUTS",
    "datalist_split_hash",
    "inference_items",
    "load_inference_network",
    "loss_components",
    "make_run_name",
    "package_versions",
    "per_image_metrics",
    "segment_volume",
    "DeepTrainingSlopeHandler",
    "deep_training_slope",
    "Predictor",
    "build_network",
    "checkpoint_sha256",
    "load_network_from_checkpoint",
    "network_config",
    "read_inference_settings",
    "segment_dicom_to_seg",
    "write_inference_settings",
    "MLflowLineage",
    "MLflowModelLogger",
    "checkpoint_lineage",
    "is_mlflow_model_uri",
    "log_checkpoint_model",
    "log_datalist_inputs",
    "provenance_tags",
    "resolve_checkpoint",
    "BatchFailedError",
    "FailureReport",
    "deploy_on_load",
    "export_checkpoint",
]
