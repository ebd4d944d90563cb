"""The model card (``model.json``), the one checkpoint loader and export."""

from __future__ import annotations

from litenext_monai.model.card import (
    DEFAULT_SETTINGS,
    INFERENCE_OVERRIDES,
    MODEL_METADATA,
    REQUIRED_SETTINGS,
    checkpoint_settings,
    checkpoint_sha256,
    class_segments,
    complete_settings,
    datalist_num_classes,
    dicom_seg_metadata,
    inference_settings_path,
    model_metadata,
    network_config,
    read_inference_settings,
    write_inference_settings,
)
from litenext_monai.model.export import EXPORT_FORMATS, deploy_on_load, export_checkpoint, export_format
from litenext_monai.model.loader import (
    build_network,
    check_network_config,
    checkpoint_network,
    load_network,
    load_state_dict,
)

__all__ = [
    "DEFAULT_SETTINGS",
    "EXPORT_FORMATS",
    "INFERENCE_OVERRIDES",
    "MODEL_METADATA",
    "REQUIRED_SETTINGS",
    "build_network",
    "check_network_config",
    "checkpoint_network",
    "checkpoint_settings",
    "checkpoint_sha256",
    "class_segments",
    "complete_settings",
    "datalist_num_classes",
    "deploy_on_load",
    "dicom_seg_metadata",
    "export_checkpoint",
    "export_format",
    "inference_settings_path",
    "load_network",
    "load_state_dict",
    "model_metadata",
    "network_config",
    "read_inference_settings",
    "write_inference_settings",
]
