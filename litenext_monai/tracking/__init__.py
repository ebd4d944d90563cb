"""MLflow: model URIs, logged models and the registry, dataset inputs and lineage handlers."""

from __future__ import annotations

from litenext_monai.tracking.models import (
    TAG_CHECKPOINT,
    TAG_MODEL_ID,
    TAG_PACKAGE_VERSION,
    TAG_TRAINING_RUN,
    LoggedCheckpoint,
    MLflowLineage,
    MLflowModelLogger,
    checkpoint_lineage,
    log_checkpoint_model,
    log_datalist_inputs,
    provenance_tags,
)
from litenext_monai.tracking.uris import effective_tracking_uri, is_mlflow_model_uri, resolve_checkpoint

__all__ = [
    "TAG_CHECKPOINT",
    "TAG_MODEL_ID",
    "TAG_PACKAGE_VERSION",
    "TAG_TRAINING_RUN",
    "LoggedCheckpoint",
    "MLflowLineage",
    "MLflowModelLogger",
    "checkpoint_lineage",
    "effective_tracking_uri",
    "is_mlflow_model_uri",
    "log_checkpoint_model",
    "log_datalist_inputs",
    "provenance_tags",
    "resolve_checkpoint",
]
