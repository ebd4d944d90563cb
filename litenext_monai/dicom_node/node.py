"""The DICOM node: receive → queue → segment → send.

:class:`DicomNode` runs a pynetdicom Storage SCP (with C-ECHO), stores what it receives in a
series timeout, segments it in a separate worker process
(:class:`~litenext_monai.dicom_node.worker.SegmentationWorker`, restarted after a crash) and
C-STOREs the resulting SEG to a destination from a sender thread, retrying with capped
exponential back-off until the destination acknowledges it. See ``docs/dicom-node-pipeline.md``.

The network edge is hardened (``docs/dicom-node.md``): associations are accepted only from allowed
``AET@HOST`` pairs (:mod:`.access`), optionally over TLS with client certificates (:mod:`.tls`);
PDU size, associations, instance and pixel sizes, Deflate and disk use are limited
(:mod:`.limits`); ``/healthz`` and ``/metrics`` report on the node (:mod:`.health`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from litenext_monai.io.atomic import atomic_write

from .access import AccessPolicy, AllowRule
from .jobs import Job, JobQueue, backoff_seconds
from .limits import GB, FailedJobJanitor, Limits, MessageSizeGuard, StorageGuard
from .receiver import StorageReceiver
from .redact import PatientRedactor
from .scp import ConnectionMonitor, build_storage_ae
from .sender import PERMANENT as PERMANENT_SEND
from .sender import Destination, SendError, send_file
from .tls import server_context
from .worker import (
    CRASH,
    PERMANENT,
    InProcessWorker,
    SegmentationError,
    SegmentationWorker,
    SegmenterFactory,
)

__all__ = [
    "DEFAULT_SERIES_DESCRIPTION",
    "DicomNode",
    "Segmenter",
    "checkpoint_segmenter",
    "checkpoint_worker",
]

logger = logging.getLogger(__name__)

#: ``segmenter(instance_files, output_path)`` writes one SEG for the instances of one series.
Segmenter = Callable[[Sequence[Path], Path], Path]

#: Series Description of the node's SEGs unless ``--series-description`` says otherwise.
DEFAULT_SERIES_DESCRIPTION = "research use only"


def checkpoint_segmenter(
    checkpoint: str,
    device: str = "cpu",
    *,
    series_description: str = DEFAULT_SERIES_DESCRIPTION,
    segment_label: str | None = None,
    segment_code: str | Sequence[str] | None = None,
) -> Segmenter:
    """Load a self-describing checkpoint once, warm it up, and return a :data:`Segmenter` that uses it.

    In the node this runs inside the worker process: pass
    ``SegmenterFactory(checkpoint_segmenter, checkpoint, device=...)`` (see :func:`checkpoint_worker`).

    Args:
        checkpoint: ``model.pt`` with its ``model.json`` beside it, or an MLflow model URI.
        device: torch device for inference.
        series_description: Series Description of every SEG.
        segment_label: overrides the model card's segment label (``model.json`` ``segment.label``).
        segment_code: overrides the model card's segmented property type: ``"SCHEME:VALUE:MEANING"``
            (e.g. ``"SCT:10200004:Liver"``) or ``[scheme, value, meaning]``.
    """
    import torch

    from litenext_monai.inference import load_network_from_checkpoint, segment_dicom_to_seg
    from litenext_monai.io.dicom_seg import DEFAULT_SEGMENT, parse_code

    network, settings = load_network_from_checkpoint(checkpoint, device=device)
    local = settings.get("checkpoint", checkpoint)  # an MLflow URI resolved once, here
    segment = {**DEFAULT_SEGMENT, **(settings.get("segment") or {})}
    if segment_label:
        segment["label"] = segment_label
    if segment_code:
        segment["type"] = parse_code(segment_code) if isinstance(segment_code, str) else list(segment_code)
    options = {"segment": segment, "series_description": series_description}
    # One forward pass now, so that the first series does not pay for kernel selection and
    # lazy initialisation inside torch.
    with torch.inference_mode():
        network(torch.zeros(1, int(settings["in_channels"]), *settings["image_size"], device=device))

    def segment_series(files: Sequence[Path], output_path: Path) -> Path:
        return segment_dicom_to_seg(
            files, local, output_path, network=network, settings=settings, seg_options=options
        )

    return segment_series


def checkpoint_worker(checkpoint: str, device: str = "cpu", **options) -> SegmenterFactory:
    """The recipe of :func:`checkpoint_segmenter` for the node's worker process (same arguments)."""
    return SegmenterFactory(checkpoint_segmenter, str(checkpoint), device=device, **options)


class DicomNode:
    """A Storage SCP that answers every received series with a DICOM SEG.

    Args:
        ae_title: the node's AE title (called by senders, calling for the destination).
        port: TCP port to listen on.
        destination: where SEGs are sent.
        storage: folder of the on-disk job queue.
        segmenter: writes one SEG for one series: a :class:`~.worker.SegmenterFactory` (e.g.
            :func:`checkpoint_worker`) or a picklable module-level segmenter function; it runs in
            a worker process (``isolate``).
        host: address to listen on.
        series_timeout: a series is sealed and segmented once it has received nothing for this
            many seconds (whatever its associations do: PACS often send one association per
            instance, or several interleaved).
        quiet_seconds: deprecated alias of ``series_timeout``.
        redactor: log filter that learns patient strings; pass the one attached to the handlers.
        retry_max_seconds: longest wait between delivery or segmentation retries (the wait
            doubles from 1 s up to this cap).
        max_refusals: a SEG that the destination refuses (failure status other than 0xA7xx
            "out of resources") this many times is moved to ``failed/``.
        network_timeout: seconds for connecting to and waiting on the destination, and the longest
            a sending peer may stall in the middle of a PDU or a TLS handshake, or take to send its
            association request.
        warm_up: the worker segments a synthetic two-slice series once after each start, so that
            the first real series does not pay for one-time initialisation.
        max_attempts: a series that took the worker down (crash, OOM kill, timeout) this many
            times goes to ``failed/``.
        max_transient_failures: a series whose segmentation failed this many times with a
            transient error (full disk, out of memory) goes to ``failed/``.
        max_send_hours: a SEG not delivered this many hours after its first attempt goes to
            ``failed/``.
        keep_sent_hours: how long the instances of a delivered series are kept, so that late
            instances get a SEG of the whole series (0: not kept).
        segment_timeout: seconds one series may take in the worker before it is killed (counts
            as a crash); ``None``: no limit.
        isolate: run the segmenter in a worker process (default); ``False`` runs it in the node's
            own process (no protection against crashes; for unpicklable segmenters).
        worker_context: ``"forkserver"`` (default) or ``"spawn"`` (see :class:`~.worker.SegmentationWorker`).
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
        ValueError: for a malformed ``allow`` rule, an unusable TLS file, an invalid limit or
            pipeline setting, or a segmenter that cannot be sent to the worker process.

    Files: the storage folder is made 0700 and every file the node writes under it 0600
    (instances, ``job.json``, ``series.json``, SEGs, which the parent chmods after the worker
    wrote them). :attr:`segmented` counts SEGs written by the worker (not the warm-up),
    :attr:`last_success` is the Unix time of the last acknowledged SEG; :meth:`health` reports the
    threads and the worker process.
    """

    def __init__(
        self,
        ae_title: str,
        port: int,
        destination: Destination,
        storage: str | Path,
        segmenter: Segmenter | SegmenterFactory,
        *,
        host: str = "0.0.0.0",
        series_timeout: float = 60.0,
        quiet_seconds: float | None = None,
        redactor: PatientRedactor | None = None,
        retry_max_seconds: float = 300.0,
        max_refusals: int = 5,
        network_timeout: float = 30.0,
        warm_up: bool = True,
        max_attempts: int = 2,
        max_transient_failures: int = 10,
        max_send_hours: float = 72.0,
        keep_sent_hours: float = 24.0,
        segment_timeout: float | None = None,
        isolate: bool = True,
        worker_context: str = "forkserver",
        allow: Iterable[str | AllowRule] = (),
        allow_any: bool = False,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        tls_ca: str | Path | None = None,
        limits: Limits | None = None,
        health_port: int | None = None,
        health_host: str = "127.0.0.1",
    ) -> None:
        if quiet_seconds is not None:
            warnings.warn("quiet_seconds is deprecated; use series_timeout", DeprecationWarning, stacklevel=2)
            series_timeout = quiet_seconds
        if series_timeout <= 0:
            raise ValueError(f"series_timeout must be positive, got {series_timeout}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if max_send_hours <= 0:
            raise ValueError(f"max_send_hours must be positive, got {max_send_hours}")
        if keep_sent_hours < 0:
            raise ValueError(f"keep_sent_hours must be 0 or more, got {keep_sent_hours}")
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
        self.series_timeout = float(series_timeout)
        self.redactor = redactor or PatientRedactor()
        self.retry_max_seconds = retry_max_seconds
        self.max_refusals = max_refusals
        self.network_timeout = network_timeout
        self.warm_up = warm_up
        self.max_attempts = int(max_attempts)
        self.max_transient_failures = int(max_transient_failures)
        self.max_send_hours = float(max_send_hours)
        self.segment_timeout = segment_timeout
        self.worker = (
            SegmentationWorker(segmenter, context=worker_context, warm_up=warm_up)
            if isolate
            else InProcessWorker(segmenter, warm_up=warm_up)
        )
        self.queue = JobQueue(
            storage, redact=self.redactor.redact, keep_sent_hours=keep_sent_hours, file_mode=0o600
        )
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
        self.superseded = 0
        self._worker_failures = 0
        self._worker_error = ""
        #: SEGs written by the segmentation worker since start; Unix time of the last SEG acknowledged.
        self.segmented = 0
        self.last_success: float | None = None

    @property
    def quiet_seconds(self) -> float:
        """Deprecated alias of :attr:`series_timeout`."""
        return self.series_timeout

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Recover the queue left by an earlier run, start the worker process and threads, then listen.

        Raises:
            SegmentationError: the worker could not build its segmenter (e.g. an unusable checkpoint).
            OSError: the port cannot be bound.
        """
        counts = self.queue.recover(seal_incoming=False)
        for job in self.queue.pending() + self.queue.segmented():
            for path in job.instance_files()[:1]:
                self.redactor.add_file(path)
        if any(counts.values()) or self.queue.incoming_series():
            logger.info(
                "Resuming: %d series to segment, %d SEGs to send, %d series still receiving "
                "(sealed after %g s of quiet)",
                counts["pending"],
                counts["segmented"],
                self.queue.incoming_series(),
                self.series_timeout,
            )
        start = time.perf_counter()
        self.worker.start()
        logger.info("Segmenter ready in %.2f s", time.perf_counter() - start)
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
            "DICOM node %s listening on %s:%d (%s); accepts %s; SEGs go to %s%s; series timeout %g s",
            self.ae_title,
            self.host,
            self.port,
            transport,
            self.access.describe(),
            self.destination,
            " over TLS" if self.destination.tls_ca else "",
            self.series_timeout,
        )

    def health(self) -> tuple[bool, str]:
        """``(True, "ok")`` while listening with every worker alive; else ``False`` and why.

        The segmentation worker process counts as alive while it runs, and also while it is down
        after a crash (the next series restarts it); it makes the node unhealthy only when it
        cannot be started (e.g. an unusable checkpoint), until a start succeeds.
        """
        server = self._server
        if server is None or server.socket.fileno() < 0:
            return False, "not listening"
        dead = [t.name for t in self._threads if not t.is_alive()]
        if dead:
            return False, f"worker thread(s) stopped: {', '.join(dead)}"
        if self._worker_failures:
            return (
                False,
                f"the segmentation worker cannot start ({self._worker_failures} tries): {self._worker_error}",
            )
        return True, "ok"

    def stop(self, drain: bool = True, association_grace: float = 30.0) -> None:
        """Stop listening; with ``drain``, segment and send everything queued first.

        Associations in progress get ``association_grace`` seconds to finish. Every instance
        received is then sealed, segmented and sent once more; SEGs the destination does not
        take stay on disk for the next start. The worker process is stopped last.
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
        self.worker.close()
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
            self._wakeup.wait(max(0.0, seconds))

    def _backoff(self, failures: int) -> float:
        return backoff_seconds(failures, base=1.0, cap=self.retry_max_seconds)

    def _error_text(self, err: BaseException) -> str:
        """``Type: message`` with every known patient string redacted (for logs and job.json)."""
        if isinstance(err, SegmentationError):
            return self.queue.clean_error(f"{err.type_name}: {err.message}")
        return self.queue.clean_error(f"{type(err).__name__}: {err}")

    # -- segmentation ----------------------------------------------------------------------------
    def _segment_loop(self) -> None:
        tick = min(1.0, self.series_timeout / 4)
        last_prune = 0.0
        try:
            while not self._halt.is_set():
                draining = self._draining.is_set()
                if not draining:
                    for job in self.queue.seal_idle(self.series_timeout):
                        logger.info(
                            "Series %s: no new instance for %g s, %d instances queued as job %s%s",
                            job.series_uid,
                            self.series_timeout,
                            len(job.instance_files()),
                            job.job_id,
                            f" (SEG generation {job.generation})" if job.generation > 1 else "",
                        )
                    if time.monotonic() - last_prune > 60.0:
                        last_prune = time.monotonic()
                        self.queue.prune_sent()
                job = self.queue.claim_pending(None if draining else time.monotonic())
                if job is None:
                    if draining:
                        return
                    due = self.queue.next_due("pending")
                    self._wait(tick if due is None else min(tick, due - time.monotonic()))
                    continue
                try:
                    self._segment(job)
                except Exception:  # noqa: BLE001 - e.g. a full disk: log, keep the job, go on
                    logger.exception("Job %s: the queue could not be updated; retrying", job.job_id)
                    self._wait(5.0)
                finally:
                    self.queue.release(job)
        finally:
            self._segmenter_done.set()
            self._wake()

    def _fail(self, job: Job, reason: str, what: str) -> None:
        self.failed += 1
        where = self.queue.mark_failed(job, reason)
        logger.error("Series %s (job %s) %s: %s; kept in %s", job.series_uid, job.job_id, what, reason, where)

    def _segment(self, job: Job) -> None:
        if job.crashes >= self.max_attempts:
            self._fail(
                job, f"took the segmentation worker down {job.crashes} times ({job.last_error})", "failed"
            )
            return
        files = job.instance_files()
        for path in files[:1]:
            self.redactor.add_file(path)
        if not self.worker.alive():
            # A worker that cannot (re)start is not this series' fault: nothing is counted.
            try:
                self.worker.start()
            except SegmentationError as err:
                self._worker_failures += 1
                self._worker_error = self._error_text(err)
                delay = self._backoff(self._worker_failures)
                logger.error(
                    "The segmentation worker cannot start (%s); series wait, next try in %g s",
                    self._error_text(err),
                    delay,
                )
                self._wait(delay)
                return
        self._worker_failures = 0
        self._worker_error = ""
        self.queue.record_segment_start(job)  # on disk before the attempt
        start = time.perf_counter()
        try:
            self.worker.segment(files, job.seg_path, timeout=self.segment_timeout)
        except SegmentationError as err:
            text = self._error_text(err)
            if err.kind == PERMANENT:
                self._fail(job, text, f"could not be segmented ({len(files)} instances)")
                return
            crash = err.kind == CRASH
            crashes = job.crashes + int(crash)
            transients = job.transient_failures + int(not crash)
            if crash and crashes >= self.max_attempts:
                self.queue.record_segment_failure(job, text, 0.0, crash=True)
                self._fail(job, f"took the segmentation worker down {crashes} times ({text})", "failed")
                return
            if not crash and transients >= self.max_transient_failures:
                self.queue.record_segment_failure(job, text, 0.0, crash=False)
                self._fail(job, f"{transients} transient failures, the last: {text}", "failed")
                return
            delay = self._backoff(crashes + transients)
            self.queue.record_segment_failure(job, text, delay, crash=crash)
            logger.warning(
                "Series %s (job %s): segmentation attempt %d failed (%s): %s; retrying in %g s",
                job.series_uid,
                job.job_id,
                job.segment_attempts,
                err.kind,
                text,
                delay,
            )
            return
        # The worker process wrote the SEG; it carries the patient's name and ID: node's user only.
        os.chmod(job.seg_path, 0o600)
        self.segmented += 1
        if job.generation > 1:
            self._supersede(job)
        self.queue.mark_segmented(job)
        logger.info(
            "Series %s: SEG of %d instances written in %.2f s (job %s)",
            job.series_uid,
            len(files),
            time.perf_counter() - start,
            job.job_id,
        )
        self._wake()

    def _supersede(self, job: Job) -> None:
        """Give a later SEG of a series a Series Number above the earlier ones' and log what it replaces."""
        import pydicom

        seg = pydicom.dcmread(job.seg_path)
        try:
            base = int(seg.get("SeriesNumber") or 0)
        except (TypeError, ValueError):
            base = 0
        seg.SeriesNumber = base + job.generation - 1
        atomic_write(
            job.seg_path, lambda tmp: seg.save_as(tmp, enforce_file_format=True), fsync=True, mode=0o600
        )
        earlier = self.queue.sent_series(job.series_uid).get("seg_series_uid") or "(not yet delivered)"
        self.superseded += 1
        logger.info(
            "Series %s: late instances; SEG generation %d (series %s, number %d, %d instances) "
            "supersedes the earlier SEG %s",
            job.series_uid,
            job.generation,
            seg.SeriesInstanceUID,
            seg.SeriesNumber,
            len(job.instance_files()),
            earlier,
        )

    # -- delivery --------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        tried_while_draining: set[str] = set()
        while not self._halt.is_set():
            draining = self._draining.is_set()
            if draining:
                job = next((j for j in self.queue.segmented() if j.job_id not in tried_while_draining), None)
            else:
                job = self.queue.claim_to_send(time.monotonic())
            if job is None:
                if draining and self._segmenter_done.is_set():
                    return
                due = self.queue.next_due("segmented")
                self._wait(0.5 if due is None or draining else min(0.5, due - time.monotonic()))
                continue
            if draining:
                tried_while_draining.add(job.job_id)
            try:
                self._send(job)
            except Exception:  # noqa: BLE001 - e.g. a full disk: log, keep the job, go on
                logger.exception("Job %s: the queue could not be updated; retrying", job.job_id)
                self._wait(5.0)
            finally:
                self.queue.release(job)

    def _send(self, job: Job) -> None:
        start = time.perf_counter()
        self.queue.record_send_start(job)
        try:
            send_file(job.seg_path, self.destination, self.ae_title, timeout=self.network_timeout)
        except SendError as err:
            text = self.queue.clean_error(str(err))
            if err.kind == PERMANENT_SEND:
                self._fail(job, text, "SEG cannot be delivered")
                return
            if err.refused and job.refusals + 1 >= self.max_refusals:
                self._fail(job, f"refused {job.refusals + 1} times: {text}", "SEG refused")
                return
            if time.time() - job.first_send_at >= self.max_send_hours * 3600.0:
                self._fail(
                    job, f"not delivered within {self.max_send_hours:g} hours: {text}", "SEG not delivered"
                )
                return
            delay = self._backoff(job.attempts + 1)
            self.queue.record_send_failure(job, text, delay, refused=err.refused)
            logger.warning(
                "SEG of series %s not delivered (attempt %d): %s; retrying in %g s",
                job.series_uid,
                job.attempts,
                text,
                delay,
            )
            return
        seg_series = _seg_series_uid(job.seg_path)
        self.queue.mark_sent(job, seg_series)
        self.sent += 1
        self.last_success = time.time()
        logger.info(
            "Series %s: SEG stored by %s in %.2f s (job %s done)",
            job.series_uid,
            self.destination,
            time.perf_counter() - start,
            job.job_id,
        )


def _seg_series_uid(path: Path) -> str:
    import pydicom

    try:
        return str(
            pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"]
            ).SeriesInstanceUID
        )
    except Exception:  # noqa: BLE001 - only for the record
        return ""
