"""A DICOM node that answers a PACS: receive → queue → segment → send.

See :class:`DicomNode` and ``scripts/dicom_node.py``.
"""

from __future__ import annotations

from litenext_monai.dicom_node.jobs import Job, JobQueue
from litenext_monai.dicom_node.node import (
    DicomNode,
    Segmenter,
    checkpoint_segmenter,
    checkpoint_worker,
)
from litenext_monai.dicom_node.receiver import InstanceRejected, StorageReceiver, check_instance
from litenext_monai.dicom_node.redact import PatientRedactor, configure_node_logging
from litenext_monai.dicom_node.sender import Destination, SendError, parse_destination, send_file
from litenext_monai.dicom_node.sop_classes import IMAGE_STORAGE_CLASSES, is_image_storage
from litenext_monai.dicom_node.synthetic import synthetic_mr_series
from litenext_monai.dicom_node.worker import (
    InProcessWorker,
    SegmentationError,
    SegmentationWorker,
    SegmenterFactory,
)

__all__ = [
    "IMAGE_STORAGE_CLASSES",
    "Destination",
    "DicomNode",
    "InProcessWorker",
    "InstanceRejected",
    "Job",
    "JobQueue",
    "PatientRedactor",
    "SegmentationError",
    "SegmentationWorker",
    "Segmenter",
    "SegmenterFactory",
    "SendError",
    "StorageReceiver",
    "check_instance",
    "checkpoint_segmenter",
    "checkpoint_worker",
    "configure_node_logging",
    "is_image_storage",
    "parse_destination",
    "synthetic_mr_series",
    "send_file",
]
