"""The DICOM node's job queue on disk: nothing acknowledged to a sender is ever lost.

Layout under the storage folder::

    tmp/                          instances being written (cleared at start)
    incoming/<series>/<sop>.dcm   received instances of series not yet sealed into a job
    jobs/<job id>/instances/      the instances of one sealed series (old and new, see below)
    jobs/<job id>/job.json        the job's state and history (see :meth:`Job.to_json`)
    jobs/<job id>/seg.dcm         the SEG, once segmented
    sent/<series>/instances/      the instances of a series whose SEG was delivered, kept for
                                  ``keep_sent_hours`` so that a late instance gets a SEG of the
                                  whole series
    sent/<series>/series.json     {"series_uid", "generation", "seg_series_uid", "sent_at"}
    failed/<job id>/              jobs that cannot succeed, with the reason in job.json

A job is ``pending`` until its SEG is written, then ``segmented`` until the destination has
acknowledged the SEG; then its instances move to ``sent/``. Every file is written to a temporary
name, flushed to disk (``fsync``) and renamed into place, and every state change is one atomic
rename, so a node killed at any moment (``kill -9``, a crash) finds a consistent queue at the next
start: :meth:`JobQueue.recover` re-queues pending and segmented jobs, and the series that were
still incoming are sealed once their series timeout has passed since their newest instance. A SEG whose acknowledgement was
lost in a crash is sent again (at-least-once delivery); it keeps its SOP Instance UID, so an
archive stores it once.

Series and generations: instances that arrive for a series after it was sealed are sealed into a
job of the same series. While the earlier job still waits for its segmentation, they join it. Once
it is being segmented, segmented or delivered, the new job gets every instance of the series (the
earlier job's, or the kept ``sent/`` copies, plus the new ones) and the next *generation* number:
its SEG covers the whole series and supersedes the earlier SEG.

Every error stored in ``job.json`` passes through the queue's ``redact`` function (the node uses
its :class:`~litenext_monai.dicom_node.redact.PatientRedactor`), so no patient name or ID reaches
the disk in a message.

Folder and file names come from UIDs only when they are well-formed UIDs; anything else is hashed,
so a hostile UID can never escape the storage folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from litenext_monai.io.atomic import atomic_write, fsync_path

__all__ = ["Job", "JobQueue", "backoff_seconds", "safe_name"]

PENDING = "pending"
SEGMENTED = "segmented"
FAILED = "failed"

#: Longest error message kept in ``job.json`` (characters).
MAX_ERROR_CHARS = 500

_UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def safe_name(uid: str) -> str:
    """A file-system name for ``uid``: the UID itself when well-formed, else a hash of it."""
    uid = str(uid)
    if _UID_PATTERN.match(uid) and len(uid) <= 64:
        return uid
    return "h" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def backoff_seconds(failures: int, base: float = 1.0, cap: float = 300.0) -> float:
    """Wait before the next attempt after ``failures`` failed ones: ``base·2^(failures-1)``, at most ``cap``.

    The exponent is clamped, so any failure count (even 10**9) gives a finite number and no
    ``OverflowError``.
    """
    exponent = min(max(int(failures) - 1, 0), 60)
    return float(min(cap, base * 2.0**exponent))


def _fsync_dir(path: Path) -> None:
    fsync_path(path)


def _write_durable(path: Path, data: bytes, mode: int | None = None) -> None:
    with open(path, "wb") as handle:
        if mode is not None:  # before any byte is written: never readable by others, not even briefly
            os.fchmod(handle.fileno(), mode)
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


@dataclass
class Job:
    """One sealed series: its folder, its state and its segmentation and delivery attempts."""

    job_id: str
    folder: Path
    series_uid: str
    state: str = PENDING
    #: delivery attempts that failed
    attempts: int = 0
    #: deliveries the destination refused with a failure status
    refusals: int = 0
    last_error: str = ""
    #: segmentation attempts started (recorded on disk before each one starts)
    segment_attempts: int = 0
    #: attempts that took the worker down (it died, was killed, or the node died meanwhile)
    crashes: int = 0
    #: attempts that failed with a transient error (full disk, out of memory)
    transient_failures: int = 0
    #: 1 for the first SEG of a series; each later SEG of the same series supersedes the earlier
    generation: int = 1
    #: wall-clock time (``time.time()``) of the first delivery attempt, 0 before it
    first_send_at: float = 0.0
    #: wall-clock time before which no new attempt is made (persisted)
    retry_at: float = 0.0
    #: ``time.monotonic()`` twin of ``retry_at``, used for scheduling (not persisted).
    not_before: float = field(default=0.0, compare=False)

    @property
    def instances_dir(self) -> Path:
        return self.folder / "instances"

    @property
    def seg_path(self) -> Path:
        return self.folder / "seg.dcm"

    @property
    def series_name(self) -> str:
        return safe_name(self.series_uid)

    def instance_files(self) -> list[Path]:
        """The received instances of the series, in a stable (name) order."""
        return sorted(p for p in self.instances_dir.glob("*.dcm") if not p.name.startswith("."))

    def to_json(self) -> dict:
        return {
            "series_uid": self.series_uid,
            "state": self.state,
            "attempts": self.attempts,
            "refusals": self.refusals,
            "last_error": self.last_error,
            "segment_attempts": self.segment_attempts,
            "crashes": self.crashes,
            "transient_failures": self.transient_failures,
            "generation": self.generation,
            "first_send_at": self.first_send_at,
            "retry_at": self.retry_at,
        }


class JobQueue:
    """Receives instances, seals them into one job per series and tracks the jobs' states.

    Thread-safe: association threads call :meth:`store_instance` and :meth:`seal` while the
    node's worker threads take (:meth:`claim_pending`, :meth:`claim_to_send`) and update jobs.

    Args:
        root: the storage folder (created when missing).
        redact: applied to every error message before it is written to ``job.json``.
        keep_sent_hours: how long the instances of a delivered series are kept in ``sent/`` for
            late instances (0: not kept; a late instance then gets a SEG of the new instances only).
        file_mode: permission bits of every file the queue writes (received instances,
            ``job.json``, ``series.json``), e.g. ``0o600`` for the node; ``None``: the defaults of
            new files (umask).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        redact: Callable[[str], str] | None = None,
        keep_sent_hours: float = 24.0,
        file_mode: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.incoming_dir = self.root / "incoming"
        self.jobs_dir = self.root / "jobs"
        self.failed_dir = self.root / "failed"
        self.sent_dir = self.root / "sent"
        for folder in (self.tmp_dir, self.incoming_dir, self.jobs_dir, self.failed_dir, self.sent_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.redact = redact or (lambda text: text)
        self.keep_sent_hours = float(keep_sent_hours)
        self.file_mode = file_mode
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._busy: set[str] = set()
        # series name -> (Series Instance UID, monotonic time of the last instance received)
        self._incoming: dict[str, tuple[str, float]] = {}
        self._counter = 0

    def clean_error(self, text: str) -> str:
        """``text`` redacted and shortened to :data:`MAX_ERROR_CHARS`, as stored in ``job.json``."""
        text = self.redact(str(text))
        return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."

    # -- receiving -------------------------------------------------------------------------------
    def store_instance(self, series_uid: str, sop_instance_uid: str, data: bytes) -> Path:
        """Write one received instance (DICOM file bytes) durably into its series' incoming folder.

        An instance received twice (a sender retrying) replaces the earlier copy. Each instance
        restarts its series' timeout (see :meth:`seal_idle`).
        """
        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.dcm"
        try:
            _write_durable(tmp, data, self.file_mode)
            series_name = safe_name(series_uid)
            with self._lock:
                series_dir = self.incoming_dir / series_name
                series_dir.mkdir(exist_ok=True)
                dest = series_dir / f"{safe_name(sop_instance_uid)}.dcm"
                os.replace(tmp, dest)
                _fsync_dir(series_dir)
                self._incoming[series_name] = (str(series_uid), time.monotonic())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return dest

    # -- sealing ---------------------------------------------------------------------------------
    def seal(self, series_uid: str) -> Job | None:
        """Turn the received instances of one series into a pending job (``None`` if there are none)."""
        return self._seal_name(safe_name(series_uid), str(series_uid))

    def seal_idle(self, series_timeout: float) -> list[Job]:
        """Seal every series that has received no instance for ``series_timeout`` seconds."""
        now = time.monotonic()
        with self._lock:
            idle = [(n, uid) for n, (uid, last) in self._incoming.items() if now - last >= series_timeout]
            return [job for name, uid in idle if (job := self._seal_name(name, uid)) is not None]

    def seal_all(self) -> list[Job]:
        """Seal every series with received instances, including ones left by an earlier run."""
        with self._lock:
            jobs = []
            for series_dir in sorted(self.incoming_dir.iterdir()):
                known = self._incoming.get(series_dir.name)
                uid = known[0] if known else self._series_uid_from_files(series_dir, series_dir.name)
                job = self._seal_name(series_dir.name, uid)
                if job is not None:
                    jobs.append(job)
            return jobs

    def incoming_series(self) -> int:
        """How many series have received instances that are not sealed yet."""
        with self._lock:
            return sum(1 for p in self.incoming_dir.iterdir() if p.is_dir())

    def _seal_name(self, series_name: str, series_uid: str) -> Job | None:
        with self._lock:
            self._incoming.pop(series_name, None)
            series_dir = self.incoming_dir / series_name
            if not series_dir.is_dir():
                return None
            arrived = [p for p in series_dir.glob("*.dcm") if not p.name.startswith(".")]
            if not arrived:
                shutil.rmtree(series_dir, ignore_errors=True)
                return None
            live = [j for _, j in sorted(self._jobs.items()) if j.series_name == series_name]
            waiting = [j for j in live if j.state == PENDING and j.job_id not in self._busy]
            if waiting:
                # The earlier job has not started: the new instances simply join it.
                job = waiting[-1]
                for path in arrived:
                    os.replace(path, job.instances_dir / path.name)
                _fsync_dir(job.instances_dir)
                shutil.rmtree(series_dir, ignore_errors=True)
                return job
            archived = self._read_sent(series_name)
            generation = max([j.generation for j in live] + [int(archived.get("generation", 0))]) + 1
            self._counter += 1
            job_id = f"{time.time_ns():020d}-{self._counter:04d}-{series_name[-12:]}"
            folder = self.jobs_dir / job_id
            folder.mkdir()
            # The earlier instances of the series (the newest live job's, else the kept copies of a
            # delivered one) go in first, so that the new SEG covers the whole series.
            earlier = live[-1].instances_dir if live else self.sent_dir / series_name / "instances"
            if earlier.is_dir():
                names = {p.name for p in arrived}
                for path in earlier.glob("*.dcm"):
                    if path.name not in names and not path.name.startswith("."):
                        _link_or_copy(path, series_dir / path.name)
                _fsync_dir(series_dir)
            os.rename(series_dir, folder / "instances")
            _fsync_dir(self.incoming_dir)
            job = Job(job_id=job_id, folder=folder, series_uid=series_uid, generation=generation)
            self._save(job)
            _fsync_dir(self.jobs_dir)
            self._jobs[job_id] = job
            return job

    # -- the jobs' life cycle --------------------------------------------------------------------
    def pending(self) -> list[Job]:
        """Jobs waiting for segmentation, oldest first."""
        with self._lock:
            return [j for _, j in sorted(self._jobs.items()) if j.state == PENDING]

    def segmented(self) -> list[Job]:
        """Jobs whose SEG waits for delivery, oldest first."""
        with self._lock:
            return [j for _, j in sorted(self._jobs.items()) if j.state == SEGMENTED]

    def next_pending(self) -> Job | None:
        jobs = self.pending()
        return jobs[0] if jobs else None

    def _earliest(self, state: str, now: float | None) -> Job | None:
        candidates = [
            j
            for _, j in sorted(self._jobs.items())
            if j.state == state and j.job_id not in self._busy and (now is None or j.not_before <= now)
        ]
        return min(candidates, key=lambda j: j.not_before) if candidates else None

    def next_to_send(self, now: float | None = None) -> Job | None:
        """The segmented job due earliest whose retry time has passed (any, when ``now`` is None)."""
        with self._lock:
            return self._earliest(SEGMENTED, now)

    def claim_pending(self, now: float | None = None) -> Job | None:
        """Take the pending job due earliest for segmentation; :meth:`release` it afterwards."""
        with self._lock:
            job = self._earliest(PENDING, now)
            if job is not None:
                self._busy.add(job.job_id)
            return job

    def claim_to_send(self, now: float | None = None) -> Job | None:
        """Take the segmented job due earliest for delivery; :meth:`release` it afterwards."""
        with self._lock:
            job = self._earliest(SEGMENTED, now)
            if job is not None:
                self._busy.add(job.job_id)
            return job

    def release(self, job: Job) -> None:
        with self._lock:
            self._busy.discard(job.job_id)

    def next_due(self, state: str) -> float | None:
        """The earliest ``not_before`` (monotonic) of the jobs in ``state`` that nobody holds."""
        with self._lock:
            times = [
                j.not_before for j in self._jobs.values() if j.state == state and j.job_id not in self._busy
            ]
            return min(times) if times else None

    def record_segment_start(self, job: Job) -> None:
        """Count a segmentation attempt on disk, before it starts (a crash cannot hide it)."""
        with self._lock:
            job.segment_attempts += 1
            self._save(job)

    def record_segment_failure(self, job: Job, error: str, retry_in: float, *, crash: bool) -> None:
        """Count a failed segmentation (``crash``: it took the worker down) and schedule the retry."""
        with self._lock:
            if crash:
                job.crashes += 1
            else:
                job.transient_failures += 1
            job.last_error = self.clean_error(error)
            self._schedule(job, retry_in)
            self._save(job)

    def mark_segmented(self, job: Job) -> None:
        with self._lock:
            job.state = SEGMENTED
            job.retry_at, job.not_before = 0.0, 0.0
            self._save(job)

    def record_send_failure(self, job: Job, error: str, retry_in: float, refused: bool = False) -> None:
        """Count a failed delivery (``refused``: the destination answered with a failure status)."""
        with self._lock:
            job.attempts += 1
            job.refusals += int(refused)
            job.last_error = self.clean_error(error)
            self._schedule(job, retry_in)
            self._save(job)

    def record_send_start(self, job: Job) -> None:
        """Remember when the first delivery attempt of ``job`` was made (for ``max_send_hours``)."""
        with self._lock:
            if not job.first_send_at:
                job.first_send_at = time.time()
                self._save(job)

    @staticmethod
    def _schedule(job: Job, retry_in: float) -> None:
        job.retry_at = time.time() + retry_in
        job.not_before = time.monotonic() + retry_in

    def mark_sent(self, job: Job, seg_series_uid: str = "") -> None:
        """Finish a delivered job: keep its instances in ``sent/`` (for late instances), delete the rest."""
        with self._lock:
            self._jobs.pop(job.job_id, None)
            self._busy.discard(job.job_id)
            # Rename first so that a crash during the deletion cannot resurrect a half-deleted job.
            trash = self.tmp_dir / f"done-{job.job_id}"
            os.rename(job.folder, trash)
            _fsync_dir(self.jobs_dir)
            name = job.series_name
            archived = self._read_sent(name)
            if self.keep_sent_hours > 0 or archived:
                keep = self.sent_dir / name
                newer = int(archived.get("generation", 0)) > job.generation
                if not newer:
                    staging = self.tmp_dir / f"sent-{job.job_id}"
                    staging.mkdir()
                    if self.keep_sent_hours > 0:
                        os.rename(trash / "instances", staging / "instances")
                    record = {
                        "series_uid": job.series_uid,
                        "generation": job.generation,
                        "seg_series_uid": seg_series_uid,
                        "sent_at": time.time(),
                    }
                    text = json.dumps(record, indent=1).encode("utf-8")
                    _write_durable(staging / "series.json", text, self.file_mode)
                    old = self.tmp_dir / f"old-{job.job_id}"
                    if keep.exists():
                        os.rename(keep, old)
                    os.rename(staging, keep)
                    _fsync_dir(self.sent_dir)
                    shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(trash, ignore_errors=True)

    def sent_series(self, series_uid: str) -> dict:
        """What ``sent/`` remembers of a delivered series (``{}`` when nothing)."""
        return self._read_sent(safe_name(series_uid))

    def _read_sent(self, series_name: str) -> dict:
        record = self.sent_dir / series_name / "series.json"
        try:
            return json.loads(record.read_text())
        except (OSError, ValueError):
            return {}

    def prune_sent(self, now: float | None = None) -> int:
        """Delete the kept instances of series delivered more than ``keep_sent_hours`` ago.

        The generation record (``series.json``, a few bytes) stays, so a very late instance still
        gets a superseding Series Number. Returns the number of series whose instances were deleted.
        """
        now = time.time() if now is None else now
        removed = 0
        with self._lock:
            for folder in self.sent_dir.iterdir():
                instances = folder / "instances"
                if not instances.is_dir():
                    continue
                sent_at = float(self._read_sent(folder.name).get("sent_at", 0.0))
                if now - sent_at >= self.keep_sent_hours * 3600.0:
                    trash = self.tmp_dir / f"pruned-{folder.name}-{uuid.uuid4().hex[:8]}"
                    os.rename(instances, trash)
                    shutil.rmtree(trash, ignore_errors=True)
                    removed += 1
        return removed

    def mark_failed(self, job: Job, reason: str) -> Path:
        """Move a job that cannot succeed to ``failed/``, keeping its files and the (redacted) reason."""
        with self._lock:
            self._jobs.pop(job.job_id, None)
            self._busy.discard(job.job_id)
            job.last_error = self.clean_error(reason)
            self._save(job, state=FAILED)
            dest = self.failed_dir / job.job_id
            os.rename(job.folder, dest)
            _fsync_dir(self.failed_dir)
            job.folder = dest
            job.state = FAILED
            return dest

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    # -- restart ---------------------------------------------------------------------------------
    def recover(self, seal_incoming: bool = True) -> dict[str, int]:
        """Rebuild the queue after a (possibly unclean) stop; returns counts by state.

        Clears half-written files and re-queues the jobs found on disk in their saved state. A
        segmentation attempt that was recorded but has no outcome is counted as a crash: the
        node died during it (``kill -9``, the OOM killer), possibly because of that series. The
        series that were still being received (their instances were acknowledged, so they are
        segmented rather than dropped) are sealed at once with ``seal_incoming``, else their series
        timeout runs on from the arrival of their newest instance (file time; see :meth:`seal_idle`).
        """
        with self._lock:
            for stray in self.tmp_dir.iterdir():
                shutil.rmtree(stray) if stray.is_dir() else stray.unlink()
            self._jobs.clear()
            self._busy.clear()
            for folder in sorted(p for p in self.jobs_dir.iterdir() if p.is_dir()):
                job = self._load(folder)
                if job is not None:
                    self._jobs[job.job_id] = job
            if seal_incoming:
                sealed = self.seal_all()
            else:
                sealed = []
                now = time.monotonic()
                for series_dir in sorted(p for p in self.incoming_dir.iterdir() if p.is_dir()):
                    uid = self._series_uid_from_files(series_dir, series_dir.name)
                    # The timeout runs from the newest instance's arrival (its file's mtime).
                    times = [p.stat().st_mtime for p in series_dir.glob("*.dcm")] or [time.time()]
                    age = max(0.0, time.time() - max(times))
                    self._incoming[series_dir.name] = (uid, now - age)
            counts = {PENDING: 0, SEGMENTED: 0}
            for job in self._jobs.values():
                counts[job.state] += 1
            counts["sealed_incoming"] = len(sealed)
            return counts

    def _load(self, folder: Path) -> Job | None:
        for stray in folder.glob(".*"):  # temporary files of an interrupted atomic write
            stray.unlink()
        instances = folder / "instances"
        if not instances.is_dir():  # crashed between creating the folder and moving the series in
            shutil.rmtree(folder)
            return None
        state_file = folder / "job.json"
        try:
            saved = json.loads(state_file.read_text()) if state_file.is_file() else {}
        except ValueError:
            saved = {}
        job = Job(
            job_id=folder.name,
            folder=folder,
            series_uid=saved.get("series_uid") or self._series_uid_from_files(instances),
            state=saved.get("state", PENDING),
            attempts=int(saved.get("attempts", 0)),
            refusals=int(saved.get("refusals", 0)),
            last_error=saved.get("last_error", ""),
            segment_attempts=int(saved.get("segment_attempts", 0)),
            crashes=int(saved.get("crashes", 0)),
            transient_failures=int(saved.get("transient_failures", 0)),
            generation=max(1, int(saved.get("generation", 1))),
            first_send_at=float(saved.get("first_send_at", 0.0)),
            retry_at=float(saved.get("retry_at", 0.0)),
        )
        if job.state not in (PENDING, SEGMENTED) or (job.state == SEGMENTED and not job.seg_path.is_file()):
            job.state = PENDING
            job.segment_attempts = job.crashes + job.transient_failures
        if job.state == PENDING:
            unexplained = job.segment_attempts - job.crashes - job.transient_failures
            if unexplained > 0:
                job.crashes += unexplained
                job.last_error = "the node stopped during the segmentation (killed or crashed)"
        job.not_before = time.monotonic() + max(0.0, job.retry_at - time.time())
        self._save(job)
        return job

    @staticmethod
    def _series_uid_from_files(folder: Path, default: str = "(unknown series)") -> str:
        import pydicom

        for path in sorted(folder.glob("*.dcm")):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
                return str(ds.SeriesInstanceUID)
            except Exception:  # noqa: BLE001 - any readable instance will do
                continue
        return default

    def _save(self, job: Job, state: str | None = None) -> None:
        payload = job.to_json()
        if state is not None:
            payload["state"] = state
        text = json.dumps(payload, indent=1).encode("utf-8")
        atomic_write(
            job.folder / "job.json",
            lambda tmp: _write_durable(tmp, text),
            fsync=True,
            mode=self.file_mode,
        )
