"""The DICOM node: receive → queue → segment → send.

:class:`DicomNode` runs a pynetdicom Storage SCP (with C-ECHO), stores what it receives in a
:class:`~litenext_monai.dicom_node.jobs.JobQueue`, segments each sealed series in a worker
thread and C-STOREs the resulting SEG to a destination in a second worker thread, retrying with
back-off until the destination acknowledges it.

The network edge is hardened (docs/dicom-node.md): associations are accepted only from allowed
``AET@HOST`` pairs (:mod:`.access`), optionally over TLS with client certificates (:mod:`.tls`);
PDU size, associations, instance and pixel sizes, Deflate and disk use are limited
(:mod:`.limits`); ``/healthz`` and ``/metrics`` report on the node (:mod:`.health`).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .access import AccessPolicy, AllowRule
from .jobs import Job, JobQueue
from .limits import GB, FailedJobJanitor, Limits, MessageSizeGuard, StorageGuard
from .receiver import StorageReceiver
from .redact import PatientRedactor
from .scp import ConnectionMonitor, build_storage_ae
from .sender import Destination, SendError, send_file
from .tls import server_context

__all__ = ["DicomNode", "Segmenter", "checkpoint_segmenter", "synthetic_mr_series"]

logger = logging.getLogger(__name__)

#: ``segmenter(instance_files, output_path)`` writes one SEG for the instances of one series.
Segmenter = Callable[[Sequence[Path], Path], Path]


def checkpoint_segmenter(checkpoint: str, device: str = "cpu") -> Segmenter:
    """Load a self-describing checkpoint once, warm it up, and return a :data:`Segmenter` that uses it.

    Args:
        checkpoint: ``model.pt`` with its ``model.json`` beside it, or an MLflow model URI.
        device: torch device for inference.
    """
    import torch

    from litenext_monai.engines import load_network_from_checkpoint, segment_dicom_to_seg

    network, settings = load_network_from_checkpoint(checkpoint, device=device)
    local = settings.get("checkpoint", checkpoint)  # an MLflow URI resolved once, here
    # One forward pass now, so that the first series does not pay for kernel selection and
    # lazy initialisation inside torch.
    with torch.inference_mode():
        network(torch.zeros(1, int(settings["in_channels"]), *settings["image_size"], device=device))

    def segment(files: Sequence[Path], output_path: Path) -> Path:
        return segment_dicom_to_seg(files, local, output_path, network=network, settings=settings)

    return segment


def synthetic_mr_series(
    images: Sequence, patient_name: str = "Synthetic^Series", patient_id: str = "SYNTHETIC"
) -> list:
    """An axial MR series (uint16 ``H×W`` slices, 1 mm apart) as pydicom datasets, with no real patient.

    The node's warm-up and ``scripts/benchmark_dicom_node.py`` build their series with it.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for index, pixels in enumerate(images):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20000101", "000000", "1", ""
        ds.ReferringPhysicianName, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "", "MR", 1, index + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, float(index)], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels.astype("uint16").tobytes()
        datasets.append(ds)
    return datasets


def _write_warm_up_series(folder: Path, size: int = 32) -> list[Path]:
    """Two synthetic MR slices (no patient data) that any image segmenter should accept."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    ramp = np.arange(size * size, dtype=np.uint16).reshape(size, size)
    paths = []
    for index, ds in enumerate(synthetic_mr_series([ramp, ramp], "Warm^Up", "WARMUP")):
        paths.append(folder / f"{index}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    return paths


class DicomNode:
    """A Storage SCP that answers every received series with a DICOM SEG.

    Args:
        ae_title: the node's AE title (called by senders, calling for the destination).
        port: TCP port to listen on.
        destination: where SEGs are sent.
        storage: folder of the on-disk job queue.
        segmenter: writes one SEG for one series (see :func:`checkpoint_segmenter`).
        host: address to listen on.
        quiet_seconds: a series that receives nothing for this long is segmented even if its
            association has not been released (aborted or long-lived associations).
        redactor: log filter that learns patient strings; pass the one attached to the handlers.
        retry_max_seconds: longest wait between delivery attempts (the wait doubles from 1 s).
        max_refusals: a SEG that the destination refuses (failure status) this many times is moved
            to ``failed/``; unreachable destinations are retried for ever.
        network_timeout: seconds for connecting to and waiting on the destination, and the longest
            a sending peer may stall in the middle of a PDU or a TLS handshake, or take to send its
            association request.
        warm_up: before listening, segment a synthetic two-slice series once, so that the first
            real series does not pay for one-time initialisation (highdicom loads its tables of
            the standard, several seconds, on first use).
        allow: ``AET@HOST`` rules (``--allow``); HOST an IP address, a CIDR network or a host name.
            Without rules every association is refused unless ``allow_any``.
        allow_any: accept any calling AE title from anywhere (``--allow-any``; logged as a warning).
        tls_cert, tls_key: PEM certificate and key: the port becomes a TLS port (``--tls-cert``,
            ``--tls-key``).
        tls_ca: PEM CA: peers must present a certificate it signed (``--tls-ca``).
        limits: PDU, association, size, Deflate, storage and retention limits (the ``--max-*``,
            ``--accept-deflate``, ``--min-free-gb`` and ``--keep-failed-days`` flags).
        health_port: serve ``/healthz`` and ``/metrics`` on this port (``--health-port``; 0: any free
            port, see :attr:`health_server`); ``None``: no HTTP server.
        health_host: address of the health server (``--health-host``, default 127.0.0.1).

    Raises:
        ValueError: for a malformed ``allow`` rule, an unusable TLS file or an invalid limit.
    """

    def __init__(
        self,
        ae_title: str,
        port: int,
        destination: Destination,
        storage: str | Path,
        segmenter: Segmenter,
        *,
        host: str = "0.0.0.0",
        quiet_seconds: float = 60.0,
        redactor: PatientRedactor | None = None,
        retry_max_seconds: float = 60.0,
        max_refusals: int = 5,
        network_timeout: float = 30.0,
        warm_up: bool = True,
        allow: Iterable[str | AllowRule] = (),
        allow_any: bool = False,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        tls_ca: str | Path | None = None,
        limits: Limits | None = None,
        health_port: int | None = None,
        health_host: str = "127.0.0.1",
    ) -> None:
        if quiet_seconds <= 0:
            raise ValueError(f"quiet_seconds must be positive, got {quiet_seconds}")
        self.access = AccessPolicy(ae_title, allow, allow_any)
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if tls_ca is not None and tls_cert is None:
            raise ValueError("--tls-ca needs --tls-cert and --tls-key (the port must be a TLS port)")
        self.tls_context = server_context(tls_cert, tls_key, tls_ca) if tls_cert is not None else None
        self.limits = limits or Limits()
        self.health_port = health_port
        self.health_host = health_host
        self.health_server = None
        self.ae_title = ae_title
        self.port = port
        self.host = host
        self.destination = destination
        self.segmenter = segmenter
        self.quiet_seconds = quiet_seconds
        self.redactor = redactor or PatientRedactor()
        self.retry_max_seconds = retry_max_seconds
        self.max_refusals = max_refusals
        self.network_timeout = network_timeout
        self.warm_up = warm_up
        self.queue = JobQueue(storage)
        os.chmod(self.queue.root, 0o700)  # received instances are patient data: the node's user only
        self.storage_guard = StorageGuard(
            self.queue.root,
            int(self.limits.max_storage_gb * GB) if self.limits.max_storage_gb is not None else None,
            int(self.limits.min_free_gb * GB) if self.limits.min_free_gb is not None else None,
        )
        self.receiver = StorageReceiver(
            self.queue,
            self.redactor,
            on_sealed=lambda jobs: self._wake(),
            limits=self.limits,
            storage_guard=self.storage_guard,
        )
        self._wakeup = threading.Condition()
        self._draining = threading.Event()
        self._halt = threading.Event()
        self._segmenter_done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server = None
        self._janitor: FailedJobJanitor | None = None
        self.sent = 0
        self.failed = 0
        #: SEGs written by the segmenter since start; Unix time of the last SEG acknowledged.
        self.segmented = 0
        self.last_success: float | None = None
        segmenter_function = segmenter

        def counting_segmenter(files: Sequence[Path], output_path: Path) -> Path:
            result = segmenter_function(files, output_path)
            if Path(output_path).is_file():
                os.chmod(output_path, 0o600)  # a SEG carries the patient's name and ID
            self.segmented += 1
            return result

        self.segmenter = counting_segmenter

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Recover the queue left by an earlier run, start the workers, then listen."""
        counts = self.queue.recover()
        for job in self.queue.pending() + self.queue.segmented():
            for path in job.instance_files()[:1]:
                self.redactor.add_file(path)
        if any(counts.values()):
            logger.info(
                "Resuming: %d series to segment (%d of them received but not sealed), %d SEGs to send",
                counts["pending"],
                counts["sealed_incoming"],
                counts["segmented"],
            )
        if self.warm_up:
            self._warm_up()
            self.segmented = 0  # the warm-up series is not a real one
        if self.limits.keep_failed_days is not None:
            self._janitor = FailedJobJanitor(self.queue.failed_dir, self.limits.keep_failed_days).start()
        self._threads = [
            threading.Thread(target=self._segment_loop, name="litenext-segment", daemon=True),
            threading.Thread(target=self._send_loop, name="litenext-send", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._server = build_storage_ae(self.ae_title, self.limits, self.network_timeout).start_server(
            (self.host, self.port),
            block=False,
            evt_handlers=self.access.handlers()
            + MessageSizeGuard(2 * self.limits.max_instance_bytes, self.limits.max_pdu).handlers()
            + self.receiver.handlers()
            + ConnectionMonitor(self.network_timeout).handlers(),
            ssl_context=self.tls_context,
        )
        if self.health_port is not None:
            from .health import HealthServer

            self.health_server = HealthServer(self, self.health_host, self.health_port).start()
        if self.access.allow_any:
            logger.warning("--allow-any: associations from any AE title and any address are accepted")
        elif not self.access.rules:
            logger.warning("No --allow rule: every association will be refused")
        transport = "plain TCP"
        if self.tls_context is not None:
            transport = "TLS" + (", client certificates required" if self.tls_context.verify_mode else "")
        logger.info(
            "DICOM node %s listening on %s:%d (%s); accepts %s; SEGs go to %s%s; quiet time %g s",
            self.ae_title,
            self.host,
            self.port,
            transport,
            self.access.describe(),
            self.destination,
            " over TLS" if self.destination.tls_ca else "",
            self.quiet_seconds,
        )

    def health(self) -> tuple[bool, str]:
        """``(True, "ok")`` while listening with every worker alive; else ``False`` and why."""
        server = self._server
        if server is None or server.socket.fileno() < 0:
            return False, "not listening"
        dead = [t.name for t in self._threads if not t.is_alive()]
        if dead:
            return False, f"worker thread(s) stopped: {', '.join(dead)}"
        return True, "ok"

    def _warm_up(self) -> None:
        folder = self.queue.tmp_dir / "warm-up"
        start = time.perf_counter()
        try:
            files = _write_warm_up_series(folder)
            self.segmenter(files, folder / "seg.dcm")
            logger.info("Warm-up segmentation took %.2f s", time.perf_counter() - start)
        except Exception as err:  # noqa: BLE001 - only a speed-up; real series report their own errors
            logger.warning("Warm-up segmentation failed (%s: %s); continuing", type(err).__name__, err)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def stop(self, drain: bool = True, association_grace: float = 30.0) -> None:
        """Stop listening; with ``drain``, segment and send everything queued first.

        Associations in progress get ``association_grace`` seconds to finish. Every instance
        received is then sealed, segmented and sent once more; SEGs the destination does not
        take stay on disk for the next start.
        """
        if self._server is not None:
            server, self._server = self._server, None
            server.shutdown()
            deadline = time.monotonic() + association_grace
            while server.active_associations and time.monotonic() < deadline:
                time.sleep(0.1)
            self.receiver.accepting = False
            for assoc in server.active_associations:
                assoc.abort()
        if drain:
            sealed = self.queue.seal_all()
            logger.info(
                "Draining: %d series to segment (%d just sealed), %d SEGs to send",
                len(self.queue.pending()),
                len(sealed),
                len(self.queue.segmented()),
            )
            self._draining.set()
        else:
            self._halt.set()
        self._wake()
        for thread in self._threads:
            thread.join()
        if self._janitor is not None:
            self._janitor.stop()
            self._janitor = None
        if self.health_server is not None:
            self.health_server.stop()
            self.health_server = None
        left = len(self.queue)
        logger.info(
            "Stopped: %d SEGs sent, %d series failed, %d jobs left in %s for the next start",
            self.sent,
            self.failed,
            left,
            self.queue.root,
        )

    def halt(self) -> None:
        """Make the workers stop after their current item (a second SIGTERM during a drain)."""
        self._halt.set()
        self._wake()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or being received (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.queue) == 0 and self.queue.incoming_series() == 0:
                return True
            time.sleep(0.05)
        return False

    def _wake(self) -> None:
        with self._wakeup:
            self._wakeup.notify_all()

    def _wait(self, seconds: float) -> None:
        with self._wakeup:
            self._wakeup.wait(seconds)

    # -- workers ---------------------------------------------------------------------------------
    def _segment_loop(self) -> None:
        tick = min(1.0, self.quiet_seconds / 4)
        try:
            while not self._halt.is_set():
                if not self._draining.is_set():
                    for job in self.queue.seal_idle(self.quiet_seconds):
                        logger.info(
                            "Series %s: quiet for %g s, %d instances queued as job %s",
                            job.series_uid,
                            self.quiet_seconds,
                            len(job.instance_files()),
                            job.job_id,
                        )
                job = self.queue.next_pending()
                if job is None:
                    if self._draining.is_set():
                        return
                    self._wait(tick)
                    continue
                try:
                    self._segment(job)
                except Exception:  # noqa: BLE001 - e.g. a full disk: log, keep the job, go on
                    logger.exception("Job %s: the queue could not be updated; retrying", job.job_id)
                    self._wait(5.0)
        finally:
            self._segmenter_done.set()
            self._wake()

    def _segment(self, job: Job) -> None:
        files = job.instance_files()
        start = time.perf_counter()
        try:
            self.segmenter(files, job.seg_path)
            if not job.seg_path.is_file():
                raise RuntimeError("the segmenter wrote no SEG")
        except Exception as err:  # noqa: BLE001 - one bad series never stops the node
            self.failed += 1
            where = self.queue.mark_failed(job, f"{type(err).__name__}: {err}")
            logger.error(
                "Series %s (job %s, %d instances) could not be segmented: %s: %s; kept in %s",
                job.series_uid,
                job.job_id,
                len(files),
                type(err).__name__,
                err,
                where,
            )
            return
        self.queue.mark_segmented(job)
        logger.info(
            "Series %s: SEG written in %.2f s (job %s)",
            job.series_uid,
            time.perf_counter() - start,
            job.job_id,
        )
        self._wake()

    def _send_loop(self) -> None:
        tried_while_draining: set[str] = set()
        while not self._halt.is_set():
            draining = self._draining.is_set()
            if draining:
                job = next((j for j in self.queue.segmented() if j.job_id not in tried_while_draining), None)
            else:
                job = self.queue.next_to_send(time.monotonic())
            if job is None:
                if draining and self._segmenter_done.is_set():
                    return
                self._wait(0.5)
                continue
            if draining:
                tried_while_draining.add(job.job_id)
            try:
                self._send(job)
            except Exception:  # noqa: BLE001 - e.g. a full disk: log, keep the job, go on
                logger.exception("Job %s: the queue could not be updated; retrying", job.job_id)
                self._wait(5.0)

    def _send(self, job: Job) -> None:
        start = time.perf_counter()
        try:
            send_file(job.seg_path, self.destination, self.ae_title, timeout=self.network_timeout)
        except SendError as err:
            if err.refused and job.refusals + 1 >= self.max_refusals:
                self.failed += 1
                where = self.queue.mark_failed(job, str(err))
                logger.error(
                    "SEG of series %s refused %d times, giving up: %s; kept in %s",
                    job.series_uid,
                    job.refusals + 1,
                    err,
                    where,
                )
                return
            delay = min(self.retry_max_seconds, 2.0**job.attempts)
            self.queue.record_send_failure(job, str(err), delay, refused=err.refused)
            logger.warning(
                "SEG of series %s not delivered (attempt %d): %s; retrying in %g s",
                job.series_uid,
                job.attempts,
                err,
                delay,
            )
            return
        self.queue.mark_sent(job)
        self.sent += 1
        self.last_success = time.time()
        logger.info(
            "Series %s: SEG stored by %s in %.2f s (job %s done)",
            job.series_uid,
            self.destination,
            time.perf_counter() - start,
            job.job_id,
        )
