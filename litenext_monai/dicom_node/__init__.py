"""A DICOM node that answers a PACS: receive → queue → segment → send.

See :class:`DicomNode`, the ``litenext-dicom-node`` command (:mod:`.cli`) and docs/dicom-node.md.
"""

from __future__ import annotations

from litenext_monai.dicom_node.access import AccessPolicy, AllowRule, parse_allow
from litenext_monai.dicom_node.jobs import Job, JobQueue
from litenext_monai.dicom_node.limits import Limits, StorageGuard
from litenext_monai.dicom_node.node import (
    DicomNode,
    Segmenter,
    checkpoint_segmenter,
    checkpoint_worker,
)
from litenext_monai.dicom_node.operations import failed_jobs, queue_counts, requeue
from litenext_monai.dicom_node.receiver import InstanceRejected, StorageReceiver, check_instance
from litenext_monai.dicom_node.redact import PatientRedactor, configure_node_logging, escape_control
from litenext_monai.dicom_node.sender import Destination, SendError, parse_destination, send_file
from litenext_monai.dicom_node.sop_classes import (
    IMAGE_STORAGE_CLASSES,
    decodable_transfer_syntaxes,
    is_image_storage,
)
from litenext_monai.dicom_node.synthetic import synthetic_mr_series
from litenext_monai.dicom_node.worker import (
    InProcessWorker,
    SegmentationError,
    SegmentationWorker,
    SegmenterFactory,
)

__all__ = [
    "IMAGE_STORAGE_CLASSES",
    "AccessPolicy",
    "AllowRule",
    "Destination",
    "DicomNode",
    "InProcessWorker",
    "InstanceRejected",
    "Job",
    "JobQueue",
    "Limits",
    "PatientRedactor",
    "SegmentationError",
    "SegmentationWorker",
    "Segmenter",
    "SegmenterFactory",
    "SendError",
    "StorageGuard",
    "StorageReceiver",
    "check_instance",
    "checkpoint_segmenter",
    "checkpoint_worker",
    "configure_node_logging",
    "decodable_transfer_syntaxes",
    "escape_control",
    "failed_jobs",
    "is_image_storage",
    "parse_allow",
    "parse_destination",
    "queue_counts",
    "requeue",
    "synthetic_mr_series",
    "send_file",
]
