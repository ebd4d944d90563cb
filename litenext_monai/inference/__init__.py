"""Inference: inputs and failure reports, the one pre/post-processing path (Predictor), volumes, DICOM SEG."""

from __future__ import annotations

from litenext_monai.inference.failures import BatchFailedError, FailureReport
from litenext_monai.inference.inputs import inference_items, list_inference_items
from litenext_monai.inference.loading import load_network_from_checkpoint
from litenext_monai.inference.predictor import Predictor, pipeline_values, segment_dicom_to_seg
from litenext_monai.inference.volume import load_inference_network, segment_volume

__all__ = [
    "BatchFailedError",
    "FailureReport",
    "Predictor",
    "inference_items",
    "list_inference_items",
    "load_inference_network",
    "load_network_from_checkpoint",
    "pipeline_values",
    "segment_dicom_to_seg",
    "segment_volume",
]
