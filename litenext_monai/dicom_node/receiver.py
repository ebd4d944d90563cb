"""The Storage SCP side of the DICOM node: check each received instance, store it, answer a status.

Handlers run on the association's thread, so they only validate and write; segmentation happens
in the node's worker process. A series is sealed by the node once it has received nothing for the
series timeout, whatever the associations do (a sender that retries re-sends instances, which
simply replace the received ones).

Before anything is decoded, an instance is measured against the node's :class:`~.limits.Limits`:
its encoded size (``max_instance_mb``, answered 0xA701), the storage quota and free-space
watermark (0xA700 while either holds), and, from the header only, the size of its decoded pixel
data (``max_pixel_mb``). Deflated data sets are inflated here with a cap, never by pynetdicom.
Stored files are private to the node's user (0600, folders 0700).
"""

from __future__ import annotations

import io
import logging
import os
import threading
import zlib
from collections.abc import Callable

from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.filereader import read_dataset
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.events import Event

from .jobs import JobQueue
from .limits import MB, LimitExceeded, Limits, StorageGuard, decoded_pixel_bytes, inflate_bounded
from .redact import PatientRedactor
from .sop_classes import is_image_storage, sop_class_name

__all__ = [
    "STATUS_SUCCESS",
    "STATUS_SOP_CLASS_NOT_SUPPORTED",
    "STATUS_OUT_OF_RESOURCES",
    "STATUS_TOO_LARGE",
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
#: Refused: out of resources (A7xx) for an instance that is too large: encoded or inflated past
#: ``--max-instance-mb``, or decoded pixel data past ``--max-pixel-mb``.
STATUS_TOO_LARGE = 0xA701
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


def check_instance(
    ds: Dataset, sop_class_uid: str, sop_instance_uid: str, max_pixel_bytes: int | None = None
) -> None:
    """Check that a received image data set is complete and its pixel data intact.

    Args:
        ds: the decoded data set, with ``file_meta`` (for the transfer syntax).
        sop_class_uid, sop_instance_uid: the UIDs of the C-STORE request.
        max_pixel_bytes: largest decoded pixel data allowed, computed from the header
            (:func:`~.limits.decoded_pixel_bytes`); ``None`` for no limit.

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
    if max_pixel_bytes is not None:
        try:
            decoded = decoded_pixel_bytes(ds)
        except LimitExceeded as err:
            raise InstanceRejected(STATUS_DATASET_MISMATCH, str(err)) from err
        if decoded > max_pixel_bytes:
            raise InstanceRejected(
                STATUS_TOO_LARGE,
                f"decoded pixel data would be {decoded / MB:.1f} MiB, more than {max_pixel_bytes / MB:g} MiB "
                "(--max-pixel-mb)",
            )
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
        limits: size limits and whether Deflate is inflated (:class:`~.limits.Limits` defaults).
        storage_guard: quota and free-space check of the storage folder (none when ``None``).

    Attributes:
        received: instances stored since start.
        refused: instances answered with a failure status since start.
    """

    def __init__(
        self,
        queue: JobQueue,
        redactor: PatientRedactor | None = None,
        on_sealed: Callable[[list], None] | None = None,
        limits: Limits | None = None,
        storage_guard: StorageGuard | None = None,
    ) -> None:
        self.queue = queue
        self.redactor = redactor
        self.on_sealed = on_sealed
        self.limits = limits or Limits()
        self.storage_guard = storage_guard
        self._lock = threading.Lock()
        self._series_by_assoc: dict[int, dict[str, None]] = {}
        self.accepting = True
        self.received = 0
        self.refused = 0

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
        status = self._store(event)
        with self._lock:
            if status == STATUS_SUCCESS:
                self.received += 1
            else:
                self.refused += 1
        return status

    def _decode(self, event: Event) -> Dataset:
        """The request's data set; a deflated one inflated here, capped at ``max_instance_mb``."""
        syntax = UID(str(event.file_meta.TransferSyntaxUID))
        if syntax != DeflatedExplicitVRLittleEndian:
            ds = event.dataset
        else:
            stream = event.request.DataSet
            try:
                inflated = inflate_bounded(stream.getvalue(), self.limits.max_instance_bytes)
            except LimitExceeded as err:
                raise InstanceRejected(STATUS_TOO_LARGE, str(err)) from err
            except zlib.error as err:
                raise InstanceRejected(
                    STATUS_CANNOT_UNDERSTAND, f"corrupt deflated data set ({err})"
                ) from err
            ds = read_dataset(io.BytesIO(inflated), is_implicit_VR=False, is_little_endian=True)
        ds.file_meta = event.file_meta
        return ds

    def _store(self, event: Event) -> int:
        request = event.request
        sop_uid = str(request.AffectedSOPInstanceUID or "(none)")
        sop_class = str(request.AffectedSOPClassUID or "")
        calling = event.assoc.requestor.ae_title
        if not self.accepting:
            logger.warning("Refused instance %s from %s: the node is shutting down", sop_uid, calling)
            return STATUS_OUT_OF_RESOURCES
        if event.assoc.is_aborted:  # e.g. by the MessageSizeGuard while this data set arrived
            logger.warning("Dropped instance %s from %s: its association was aborted", sop_uid, calling)
            return STATUS_OUT_OF_RESOURCES
        if not is_image_storage(sop_class):
            logger.warning(
                "Refused instance %s from %s: %s is not an image storage class",
                sop_uid,
                calling,
                sop_class_name(sop_class),
            )
            return STATUS_SOP_CLASS_NOT_SUPPORTED
        size = request.DataSet.seek(0, io.SEEK_END) if request.DataSet is not None else 0
        if size > self.limits.max_instance_bytes:
            logger.error(
                "Refused instance %s from %s: %d bytes is more than %g MiB (--max-instance-mb)",
                sop_uid,
                calling,
                size,
                self.limits.max_instance_mb,
            )
            return STATUS_TOO_LARGE
        if self.storage_guard is not None and (reason := self.storage_guard.refusal(size)) is not None:
            logger.error("Refused instance %s from %s: %s", sop_uid, calling, reason)
            return STATUS_OUT_OF_RESOURCES
        try:
            ds = self._decode(event)
            if self.redactor is not None:
                self.redactor.add_dataset(ds)
            check_instance(ds, sop_class, sop_uid, self.limits.max_pixel_bytes)
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
            data = event.encoded_dataset(include_meta=True)
            path = self.queue.store_instance(series_uid, sop_uid, data)
            os.chmod(path, 0o600)
            os.chmod(path.parent, 0o700)
        except OSError as err:
            logger.error("Could not store instance %s: %s", sop_uid, err)
            return STATUS_OUT_OF_RESOURCES
        if self.storage_guard is not None:
            self.storage_guard.add(len(data))
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
