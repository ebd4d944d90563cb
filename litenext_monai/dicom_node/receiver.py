"""The Storage SCP side of the DICOM node: check each received instance, store it, answer a status.

Handlers run on the association's thread, so they only validate and write; segmentation happens
in the node's worker process. A series is sealed by the node once it has received nothing for the
series timeout, whatever the associations do (a sender that retries re-sends instances, which
simply replace the received ones).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.events import Event

from .jobs import JobQueue
from .redact import PatientRedactor
from .sop_classes import is_image_storage, sop_class_name

__all__ = [
    "STATUS_SUCCESS",
    "STATUS_SOP_CLASS_NOT_SUPPORTED",
    "STATUS_OUT_OF_RESOURCES",
    "STATUS_DATASET_MISMATCH",
    "STATUS_CANNOT_UNDERSTAND",
    "STATUS_CORRUPT_PIXEL_DATA",
    "InstanceRejected",
    "StorageReceiver",
    "check_instance",
]

logger = logging.getLogger(__name__)

#: C-STORE statuses (PS3.4 Annex B.2.3); the 0xC000 range is "Error: Cannot understand".
STATUS_SUCCESS = 0x0000
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_MISMATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
STATUS_CORRUPT_PIXEL_DATA = 0xC001

_REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns", "BitsAllocated")


class InstanceRejected(Exception):
    """A received instance that is not stored; ``status`` is the C-STORE status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def check_instance(ds: Dataset, sop_class_uid: str, sop_instance_uid: str) -> None:
    """Check that a received image data set is complete and its pixel data intact.

    Args:
        ds: the decoded data set, with ``file_meta`` (for the transfer syntax).
        sop_class_uid, sop_instance_uid: the UIDs of the C-STORE request.

    Raises:
        InstanceRejected: with the status to answer and a reason free of patient data.
    """
    if str(ds.get("SOPClassUID", "")) != str(sop_class_uid):
        raise InstanceRejected(STATUS_DATASET_MISMATCH, "SOP Class UID differs from the C-STORE request")
    if str(ds.get("SOPInstanceUID", "")) != str(sop_instance_uid):
        raise InstanceRejected(STATUS_DATASET_MISMATCH, "SOP Instance UID differs from the C-STORE request")
    missing = [name for name in _REQUIRED if not ds.get(name)]
    if missing:
        raise InstanceRejected(STATUS_DATASET_MISMATCH, f"missing required attributes {missing}")
    if "PixelData" not in ds:
        raise InstanceRejected(STATUS_DATASET_MISMATCH, "no Pixel Data")
    pixels = ds.PixelData
    syntax = UID(str(getattr(ds.file_meta, "TransferSyntaxUID", "")))
    if syntax.is_encapsulated:
        try:
            fragments = sum(1 for _ in generate_fragments(pixels))
        except Exception as err:  # noqa: BLE001 - pydicom raises several types on bad items
            raise InstanceRejected(
                STATUS_CORRUPT_PIXEL_DATA, f"malformed encapsulated Pixel Data ({err})"
            ) from err
        if fragments == 0:
            raise InstanceRejected(STATUS_CORRUPT_PIXEL_DATA, "encapsulated Pixel Data has no fragments")
        return
    try:
        expected = get_expected_length(ds, unit="bytes")
    except Exception as err:  # noqa: BLE001 - inconsistent image attributes
        raise InstanceRejected(STATUS_DATASET_MISMATCH, f"inconsistent image attributes ({err})") from err
    if len(pixels) < expected:
        raise InstanceRejected(
            STATUS_CORRUPT_PIXEL_DATA, f"Pixel Data holds {len(pixels)} bytes, the image needs {expected}"
        )


class StorageReceiver:
    """pynetdicom event handlers that validate instances and store them into a :class:`JobQueue`.

    Args:
        queue: where instances go.
        redactor: learns the patient strings of each instance before anything can log them.
        on_sealed: kept for compatibility; releases no longer seal series (the node's series
            timeout does), so it is not called.
    """

    def __init__(
        self,
        queue: JobQueue,
        redactor: PatientRedactor | None = None,
        on_sealed: Callable[[list], None] | None = None,
    ) -> None:
        self.queue = queue
        self.redactor = redactor
        self.on_sealed = on_sealed
        self._lock = threading.Lock()
        self._series_by_assoc: dict[int, dict[str, None]] = {}
        self.accepting = True

    def handlers(self) -> list[tuple]:
        """The ``evt_handlers`` for ``AE.start_server``."""
        return [
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_RELEASED, self.on_released),
            (evt.EVT_ABORTED, self.on_ended),
            (evt.EVT_CONN_CLOSE, self.on_ended),
        ]

    def on_echo(self, event: Event) -> int:
        logger.debug("C-ECHO from %s", event.assoc.requestor.ae_title)
        return STATUS_SUCCESS

    def on_store(self, event: Event) -> int:
        request = event.request
        sop_uid = str(request.AffectedSOPInstanceUID or "(none)")
        sop_class = str(request.AffectedSOPClassUID or "")
        calling = event.assoc.requestor.ae_title
        if not self.accepting:
            logger.warning("Refused instance %s from %s: the node is shutting down", sop_uid, calling)
            return STATUS_OUT_OF_RESOURCES
        if not is_image_storage(sop_class):
            logger.warning(
                "Refused instance %s from %s: %s is not an image storage class",
                sop_uid,
                calling,
                sop_class_name(sop_class),
            )
            return STATUS_SOP_CLASS_NOT_SUPPORTED
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            if self.redactor is not None:
                self.redactor.add_dataset(ds)
            check_instance(ds, sop_class, sop_uid)
            series_uid = str(ds.SeriesInstanceUID)
        except InstanceRejected as err:
            logger.error("Refused instance %s from %s: %s", sop_uid, calling, err.reason)
            return err.status
        except Exception as err:  # noqa: BLE001 - any decoding failure means a corrupt data set
            logger.error(
                "Refused instance %s from %s: the data set cannot be decoded (%s: %s)",
                sop_uid,
                calling,
                type(err).__name__,
                err,
            )
            return STATUS_CANNOT_UNDERSTAND
        try:
            self.queue.store_instance(series_uid, sop_uid, event.encoded_dataset(include_meta=True))
        except OSError as err:
            logger.error("Could not store instance %s: %s", sop_uid, err)
            return STATUS_OUT_OF_RESOURCES
        with self._lock:
            self._series_by_assoc.setdefault(id(event.assoc), {})[series_uid] = None
        logger.debug("Stored instance %s of series %s from %s", sop_uid, series_uid, calling)
        return STATUS_SUCCESS

    def on_released(self, event: Event) -> None:
        """A released association seals nothing: a series is complete after its series timeout.

        (PACS send one association per instance, or one series over several interleaved
        associations, so a release says nothing about the series.)
        """
        with self._lock:
            series = self._series_by_assoc.pop(id(event.assoc), {})
        if series:
            logger.debug(
                "Association from %s released after %d series", event.assoc.requestor.ae_title, len(series)
            )

    def on_ended(self, event: Event) -> None:
        """An abort or a lost connection: the series stay incoming until their series timeout."""
        with self._lock:
            series = self._series_by_assoc.pop(id(event.assoc), None)
        if series:
            logger.warning(
                "Association from %s ended without release after %d series; "
                "their instances wait for the series timeout",
                event.assoc.requestor.ae_title,
                len(series),
            )
