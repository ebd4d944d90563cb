"""Resource limits of the DICOM node: what one peer, one instance or the disk may cost.

* :class:`Limits` — the settings (PDU size, associations, instance size, decoded pixel size,
  Deflate, storage quota, free-space watermark, retention of ``failed/``).
* :func:`decoded_pixel_bytes` — the size of the decoded pixel data from the header alone, checked
  before anything decodes a pixel.
* :func:`inflate_bounded` — Deflated Explicit VR Little Endian inflated with a cap (pynetdicom's own
  decoder inflates without one, so a few kilobytes can become gigabytes: a "deflate bomb").
* :class:`StorageGuard` — whether the storage folder is over its quota or the disk under its
  free-space watermark; the receiver answers 0xA700 (out of resources) while either holds.
* :class:`MessageSizeGuard` — aborts an association whose data set grows past twice the instance
  limit while it is still arriving (pynetdicom collects a whole data set in memory before the
  C-STORE handler sees it, so the handler's size check alone bounds the disk, not the memory).
* :func:`purge_failed` — deletes ``failed/`` entries older than the retention time;
  :class:`FailedJobJanitor` does it at start and hourly.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.events import Event

__all__ = [
    "FailedJobJanitor",
    "LimitExceeded",
    "Limits",
    "MessageSizeGuard",
    "StorageGuard",
    "decoded_pixel_bytes",
    "folder_bytes",
    "inflate_bounded",
    "purge_failed",
]

logger = logging.getLogger(__name__)

MB = 1024**2
GB = 1024**3


class LimitExceeded(ValueError):
    """A received instance (or its pixel data once decoded) is larger than a limit allows."""


@dataclass
class Limits:
    """What the node accepts. Sizes in MiB/GiB (1024-based); ``None`` means no limit.

    Attributes:
        max_pdu: largest P-DATA PDU the node receives (bytes; negotiated with the peer). pynetdicom's
            default 16382; 0 (unlimited) is not allowed.
        max_associations: associations served at once; more are rejected (transient).
        max_instance_mb: largest encoded data set accepted (after inflation, for Deflate).
        max_pixel_mb: largest decoded pixel data (Rows × Columns × frames × samples × bits / 8).
        accept_deflate: offer Deflated Explicit VR Little Endian (inflated with ``max_instance_mb``
            as the cap).
        max_storage_gb: quota of the storage folder; over it, C-STORE answers 0xA700.
        min_free_gb: free-space watermark of the storage disk; under it, C-STORE answers 0xA700.
        keep_failed_days: ``failed/`` entries older than this are deleted (hourly and at start).
    """

    max_pdu: int = 16382
    max_associations: int = 10
    max_instance_mb: float = 256.0
    max_pixel_mb: float = 1024.0
    accept_deflate: bool = False
    max_storage_gb: float | None = None
    min_free_gb: float | None = 1.0
    keep_failed_days: float | None = 30.0

    def __post_init__(self) -> None:
        if not 4096 <= self.max_pdu <= 2**32 - 1:
            raise ValueError(f"--max-pdu must be 4096 to 4294967295 bytes, got {self.max_pdu}")
        if self.max_associations < 1:
            raise ValueError(f"--max-associations must be at least 1, got {self.max_associations}")
        for name in ("max_instance_mb", "max_pixel_mb", "max_storage_gb", "keep_failed_days"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.min_free_gb is not None and self.min_free_gb < 0:
            raise ValueError(f"--min-free-gb must not be negative, got {self.min_free_gb}")

    @property
    def max_instance_bytes(self) -> int:
        return int(self.max_instance_mb * MB)

    @property
    def max_pixel_bytes(self) -> int:
        return int(self.max_pixel_mb * MB)


def decoded_pixel_bytes(ds: Dataset) -> int:
    """Bytes of the decoded pixel data: Rows × Columns × NumberOfFrames × SamplesPerPixel × bits / 8.

    Reads only header attributes (nothing is decoded). Raises :class:`LimitExceeded` for missing or
    non-positive image dimensions.
    """
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError) as err:
        raise LimitExceeded(f"image dimensions are missing or not numbers ({err})") from err
    if min(rows, columns, frames, samples, bits) <= 0:
        raise LimitExceeded(
            f"image dimensions must be positive (Rows {rows}, Columns {columns}, frames {frames}, "
            f"samples {samples}, BitsAllocated {bits})"
        )
    return (rows * columns * frames * samples * bits + 7) // 8


def inflate_bounded(data: bytes, limit: int) -> bytes:
    """Inflate a raw-deflate stream (Deflated Explicit VR Little Endian), refusing past ``limit`` bytes.

    Raises:
        LimitExceeded: when the inflated data would exceed ``limit`` (nothing beyond ``limit + 1``
            bytes is ever allocated).
        zlib.error: when the stream is corrupt.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit or inflater.unconsumed_tail:
        raise LimitExceeded(
            f"the deflated data set inflates to more than {limit / MB:g} MiB (--max-instance-mb)"
        )
    return out + inflater.flush()


def folder_bytes(root: Path) -> int:
    """Total size of the files under ``root`` (bytes); files that vanish meanwhile count as 0.

    Everything under ``root`` counts (``incoming/``, ``jobs/``, ``sent/``, ``failed/``, ``tmp/``);
    a file hard-linked several times under it (instances of a delivered series that a later
    generation of the series reuses) counts once, as it takes its space once.
    """
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            info = entry.stat(follow_symlinks=False)
                            if info.st_nlink > 1:
                                key = (info.st_dev, info.st_ino)
                                if key in seen:
                                    continue
                                seen.add(key)
                            total += info.st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


class StorageGuard:
    """Quota and free-space check for the storage folder, cheap enough to run on every C-STORE.

    The folder is measured at most every ``refresh_seconds`` (a walk of the tree); in between,
    accepted instances are added to the last measurement, so a burst cannot overshoot the quota by
    more than what arrives within one refresh. Freed space (sent jobs deleted, an operator cleaning
    up) is seen at the next refresh.

    Args:
        root: the storage folder.
        max_bytes: quota of the folder, or ``None``.
        min_free_bytes: free-space watermark of its disk, or ``None``.
        refresh_seconds: longest time a measurement is trusted.
    """

    def __init__(
        self, root: Path, max_bytes: int | None, min_free_bytes: int | None, refresh_seconds: float = 1.0
    ) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._measured_at = -float("inf")
        self._used = 0
        self._free = 0

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._measured_at < self.refresh_seconds:
            return
        self._used = folder_bytes(self.root) if self.max_bytes is not None else 0
        self._free = shutil.disk_usage(self.root).free if self.min_free_bytes is not None else 0
        self._measured_at = now

    def refusal(self, incoming: int) -> str | None:
        """``None`` when ``incoming`` bytes may be stored now; else why not (for the log)."""
        with self._lock:
            self._refresh()
            if self.max_bytes is not None and self._used + incoming > self.max_bytes:
                return (
                    f"storage quota reached ({self._used / GB:.3f} of {self.max_bytes / GB:g} GiB used, "
                    "--max-storage-gb)"
                )
            if self.min_free_bytes is not None and self._free - incoming < self.min_free_bytes:
                return (
                    f"disk nearly full ({self._free / GB:.3f} GiB free, watermark "
                    f"{self.min_free_bytes / GB:g} GiB, --min-free-gb)"
                )
            return None

    def add(self, stored: int) -> None:
        """Count ``stored`` bytes written since the last measurement."""
        with self._lock:
            self._used += stored
            self._free -= stored


class MessageSizeGuard:
    """Aborts an association whose incoming data set passes ``limit`` bytes while still arriving.

    Bound to ``EVT_DATA_RECV`` (raw PDUs): the data-set fragments of each P-DATA-TF PDU are summed
    per association until a fragment marked "last" arrives. Also aborts on a PDU longer than the
    negotiated maximum (pynetdicom reads whatever length a peer announces).

    Args:
        limit: bytes of one data set at which the association is aborted.
        max_pdu: the node's maximum PDU length (bytes).
    """

    def __init__(self, limit: int, max_pdu: int) -> None:
        self.limit = limit
        self.max_pdu = max_pdu
        self._lock = threading.Lock()
        self._received: dict[int, int] = {}

    def handlers(self) -> list[tuple]:
        return [(evt.EVT_DATA_RECV, self.on_data), (evt.EVT_CONN_CLOSE, self.on_close)]

    def on_close(self, event: Event) -> None:
        with self._lock:
            self._received.pop(id(event.assoc), None)

    def on_data(self, event: Event) -> None:
        data: bytes = event.data
        if data[:1] != b"\x04" or self._received.get(id(event.assoc)) == -1:  # not P-DATA, or aborted
            return
        if len(data) - 6 > self.max_pdu:
            self._abort(event, f"a PDU of {len(data) - 6} bytes exceeds --max-pdu {self.max_pdu}")
            return
        key = id(event.assoc)
        offset = 6
        with self._lock:
            total = self._received.get(key, 0)
            while offset + 6 <= len(data):
                (length,) = struct.unpack(">L", data[offset : offset + 4])
                header = data[offset + 5]
                if not header & 0x01:  # a data-set fragment (bit 0 clear), not a command
                    total += length - 2
                    if header & 0x02:  # the last fragment of this data set
                        total = 0
                offset += 4 + length
            self._received[key] = total
        if total > self.limit:
            self._abort(event, f"a data set passed {self.limit} bytes while arriving")

    def _abort(self, event: Event, reason: str) -> None:
        with self._lock:
            self._received[id(event.assoc)] = -1  # log and abort once; later PDUs are ignored
        requestor = event.assoc.requestor
        logger.error(
            "Association from %s:%s calling %r aborted: %s",
            requestor.address,
            requestor.port,
            str(requestor.ae_title).strip(),
            reason,
        )
        event.assoc.abort(block=False)  # on the connection's own thread: must not wait for itself


def purge_failed(failed_dir: Path, keep_days: float, now: float | None = None) -> int:
    """Delete the entries of ``failed_dir`` last modified more than ``keep_days`` ago.

    Returns:
        How many entries were deleted.
    """
    cutoff = (time.time() if now is None else now) - keep_days * 86400.0
    removed = 0
    for entry in Path(failed_dir).iterdir() if Path(failed_dir).is_dir() else ():
        try:
            if entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            removed += 1
        except OSError as err:
            logger.warning("Could not delete %s (failed job past --keep-failed-days): %s", entry.name, err)
    return removed


class FailedJobJanitor:
    """Runs :func:`purge_failed` now (:meth:`start`) and then every ``interval`` seconds in a thread.

    Args:
        failed_dir: the queue's ``failed/`` folder.
        keep_days: retention in days.
        interval: seconds between purges (hourly by default).
    """

    def __init__(self, failed_dir: Path, keep_days: float, interval: float = 3600.0) -> None:
        self.failed_dir = Path(failed_dir)
        self.keep_days = keep_days
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def purge(self) -> int:
        try:
            removed = purge_failed(self.failed_dir, self.keep_days)
        except OSError as err:
            logger.warning("Could not purge %s: %s", self.failed_dir, err)
            return 0
        if removed:
            logger.info(
                "Deleted %d failed job(s) older than %g days (--keep-failed-days)", removed, self.keep_days
            )
        return removed

    def start(self) -> FailedJobJanitor:
        self.purge()
        self._thread = threading.Thread(target=self._run, name="litenext-janitor", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.purge()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
