"""The DICOM node's job queue on disk: nothing acknowledged to a sender is ever lost.

Layout under the storage folder::

    tmp/                          instances being written (cleared at start)
    incoming/<series>/<sop>.dcm   received instances of series not yet sealed into a job
    jobs/<job id>/instances/      the instances of one sealed series
    jobs/<job id>/job.json        {"series_uid", "state": "pending" | "segmented", "attempts",
                                   "refusals", "last_error"}
    jobs/<job id>/seg.dcm         the SEG, once segmented
    failed/<job id>/              jobs that cannot succeed, with the reason in job.json

A job is ``pending`` until its SEG is written, then ``segmented`` until the destination has
acknowledged the SEG, then deleted. Every file is written to a temporary name, flushed to disk
(``fsync``) and renamed into place, and every state change is one atomic rename, so a node
killed at any moment (``kill -9``, a crash) finds a consistent queue at the next start:
:meth:`JobQueue.recover` re-queues pending and segmented jobs and seals the series that were
still incoming. A SEG whose acknowledgement was lost in a crash is sent again (at-least-once
delivery); it keeps its SOP Instance UID, so an archive stores it once.

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
from dataclasses import dataclass, field
from pathlib import Path

from litenext_monai.io.atomic import atomic_write

__all__ = ["Job", "JobQueue", "safe_name"]

PENDING = "pending"
SEGMENTED = "segmented"

_UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def safe_name(uid: str) -> str:
    """A file-system name for ``uid``: the UID itself when well-formed, else a hash of it."""
    uid = str(uid)
    if _UID_PATTERN.match(uid) and len(uid) <= 64:
        return uid
    return "h" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:40]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durable(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


@dataclass
class Job:
    """One sealed series: its folder, its state and its delivery attempts."""

    job_id: str
    folder: Path
    series_uid: str
    state: str = PENDING
    attempts: int = 0
    refusals: int = 0
    last_error: str = ""
    #: ``time.monotonic()`` before which no new delivery attempt is made (not persisted).
    not_before: float = field(default=0.0, compare=False)

    @property
    def instances_dir(self) -> Path:
        return self.folder / "instances"

    @property
    def seg_path(self) -> Path:
        return self.folder / "seg.dcm"

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
        }


class JobQueue:
    """Receives instances, seals them into one job per series and tracks the jobs' states.

    Thread-safe: association threads call :meth:`store_instance` and :meth:`seal` while the
    node's worker threads take and update jobs.

    Args:
        root: the storage folder (created when missing).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        self.incoming_dir = self.root / "incoming"
        self.jobs_dir = self.root / "jobs"
        self.failed_dir = self.root / "failed"
        for folder in (self.tmp_dir, self.incoming_dir, self.jobs_dir, self.failed_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        # series name -> (Series Instance UID, monotonic time of the last instance received)
        self._incoming: dict[str, tuple[str, float]] = {}
        self._counter = 0

    # -- receiving -------------------------------------------------------------------------------
    def store_instance(self, series_uid: str, sop_instance_uid: str, data: bytes) -> Path:
        """Write one received instance (DICOM file bytes) durably into its series' incoming folder.

        An instance received twice (a sender retrying) replaces the earlier copy.
        """
        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.dcm"
        try:
            _write_durable(tmp, data)
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

    def seal_idle(self, quiet_seconds: float) -> list[Job]:
        """Seal every series that has received no instance for ``quiet_seconds``."""
        now = time.monotonic()
        with self._lock:
            idle = [(n, uid) for n, (uid, last) in self._incoming.items() if now - last >= quiet_seconds]
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
            if not any(series_dir.glob("*.dcm")):
                shutil.rmtree(series_dir, ignore_errors=True)
                return None
            self._counter += 1
            job_id = f"{time.time_ns():020d}-{self._counter:04d}-{series_name[-12:]}"
            folder = self.jobs_dir / job_id
            folder.mkdir()
            os.rename(series_dir, folder / "instances")
            job = Job(job_id=job_id, folder=folder, series_uid=series_uid)
            self._save(job)
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

    def next_to_send(self, now: float | None = None) -> Job | None:
        """The oldest segmented job whose retry delay has passed (all of them when ``now`` is None)."""
        for job in self.segmented():
            if now is None or job.not_before <= now:
                return job
        return None

    def mark_segmented(self, job: Job) -> None:
        with self._lock:
            job.state = SEGMENTED
            self._save(job)

    def record_send_failure(self, job: Job, error: str, retry_in: float, refused: bool = False) -> None:
        """Count a failed delivery (``refused``: the destination answered with a failure status)."""
        with self._lock:
            job.attempts += 1
            job.refusals += int(refused)
            job.last_error = error
            job.not_before = time.monotonic() + retry_in
            self._save(job)

    def mark_sent(self, job: Job) -> None:
        """Forget a delivered job and delete its files."""
        with self._lock:
            self._jobs.pop(job.job_id, None)
            # Rename first so that a crash during the deletion cannot resurrect a half-deleted job.
            trash = self.tmp_dir / f"done-{job.job_id}"
            os.rename(job.folder, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def mark_failed(self, job: Job, reason: str) -> Path:
        """Move a job that cannot succeed to ``failed/``, keeping its files and the reason."""
        with self._lock:
            self._jobs.pop(job.job_id, None)
            job.last_error = reason
            self._save(job, state="failed")
            dest = self.failed_dir / job.job_id
            os.rename(job.folder, dest)
            job.folder = dest
            return dest

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    # -- restart ---------------------------------------------------------------------------------
    def recover(self) -> dict[str, int]:
        """Rebuild the queue after a (possibly unclean) stop; returns counts by state.

        Clears half-written files, re-queues the jobs found on disk in their saved state and seals
        the series that were still being received (their instances were acknowledged, so they are
        segmented rather than dropped).
        """
        with self._lock:
            for stray in self.tmp_dir.iterdir():
                shutil.rmtree(stray) if stray.is_dir() else stray.unlink()
            self._jobs.clear()
            for folder in sorted(p for p in self.jobs_dir.iterdir() if p.is_dir()):
                job = self._load(folder)
                if job is not None:
                    self._jobs[job.job_id] = job
            sealed = self.seal_all()
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
        saved = json.loads(state_file.read_text()) if state_file.is_file() else {}
        job = Job(
            job_id=folder.name,
            folder=folder,
            series_uid=saved.get("series_uid") or self._series_uid_from_files(instances),
            state=saved.get("state", PENDING),
            attempts=int(saved.get("attempts", 0)),
            refusals=int(saved.get("refusals", 0)),
            last_error=saved.get("last_error", ""),
        )
        if job.state not in (PENDING, SEGMENTED) or (job.state == SEGMENTED and not job.seg_path.is_file()):
            job.state = PENDING
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
        atomic_write(job.folder / "job.json", lambda tmp: _write_durable(tmp, text))
