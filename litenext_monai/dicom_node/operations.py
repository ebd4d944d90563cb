"""Operator views of a node's storage folder: counts per queue state, failed jobs, requeue.

These read the on-disk layout of :class:`~litenext_monai.dicom_node.jobs.JobQueue` directly
(``incoming/<series>/``, ``jobs/<id>/job.json`` with its ``state``, ``sent/<series>/``,
``failed/<id>/job.json``), so
they work on the folder of a node that is stopped or running, and they count any state a job file
names rather than a fixed list. Nothing of a patient is read except to redact failure reasons.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from litenext_monai.io.atomic import atomic_write

from .redact import PatientRedactor, escape_control

__all__ = ["FailedJob", "failed_jobs", "queue_counts", "requeue"]


def _read_job(folder: Path) -> dict:
    try:
        saved = json.loads((folder / "job.json").read_text())
    except (OSError, ValueError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _job_folders(parent: Path) -> list[Path]:
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))


def queue_counts(storage: str | os.PathLike) -> dict[str, int]:
    """How many series are being received and how many jobs are in each state.

    Returns:
        ``{"incoming": series not sealed yet, <state>: jobs in ``jobs/`` saved in that state
        (``pending``, ``segmented``, ... whatever job.json says; ``unknown`` without one),
        "sent": delivered series that ``sent/`` remembers (their instances kept for late ones for
        ``--keep-sent-hours``, then only their record), "failed": jobs in ``failed/``}``.
    """
    root = Path(storage)
    counts: Counter[str] = Counter()
    counts["incoming"] = len(_job_folders(root / "incoming"))
    counts["pending"] = 0
    counts["segmented"] = 0
    for folder in _job_folders(root / "jobs"):
        counts[str(_read_job(folder).get("state") or "unknown")] += 1
    counts["sent"] = len(_job_folders(root / "sent"))
    counts["failed"] = len(_job_folders(root / "failed"))
    return dict(counts)


@dataclass(frozen=True)
class FailedJob:
    """A job in ``failed/``: its id, series UID, attempts and why it failed (patient data redacted).

    ``attempts`` are failed deliveries; ``segment_attempts`` segmentations started, of which
    ``crashes`` took the worker down and ``transient_failures`` failed with a transient error;
    ``generation`` is the SEG generation of the series (1: its first SEG).
    """

    job_id: str
    series_uid: str
    attempts: int
    reason: str
    segment_attempts: int = 0
    crashes: int = 0
    transient_failures: int = 0
    generation: int = 1


def failed_jobs(storage: str | os.PathLike) -> list[FailedJob]:
    """The jobs in ``failed/``, oldest first, with their reasons redacted and control characters escaped.

    A reason is redacted with the patient name and ID of the job's own instances (a library's error
    message may quote them).
    """
    found = []
    for folder in _job_folders(Path(storage) / "failed"):
        saved = _read_job(folder)
        redactor = PatientRedactor()
        for path in sorted((folder / "instances").glob("*.dcm"))[:1]:
            redactor.add_file(path)
        reason = redactor.redact(str(saved.get("last_error") or "(no reason recorded)"))
        found.append(
            FailedJob(
                job_id=folder.name,
                series_uid=escape_control(str(saved.get("series_uid") or "(unknown series)")),
                attempts=int(saved.get("attempts") or 0),
                reason=escape_control(reason),
                segment_attempts=int(saved.get("segment_attempts") or 0),
                crashes=int(saved.get("crashes") or 0),
                transient_failures=int(saved.get("transient_failures") or 0),
                generation=int(saved.get("generation") or 1),
            )
        )
    return found


def requeue(storage: str | os.PathLike, job_id: str) -> Path:
    """Move a failed job back to ``jobs/`` as ``pending``, with its attempt counters reset.

    Reset: delivery ``attempts`` and ``refusals``, ``segment_attempts``, ``crashes``,
    ``transient_failures``, ``first_send_at`` (a fresh ``--max-send-hours`` window) and ``retry_at``
    (no back-off); the SEG ``generation`` is kept. The job is segmented again (its old SEG, if any,
    is replaced). A running node picks it up at its
    next start, when it rebuilds its queue from disk.

    Raises:
        ValueError: when ``job_id`` is not a job in ``failed/`` (or not a plain folder name).
        FileExistsError: when ``jobs/`` already holds a job with that id.
    """
    root = Path(storage)
    if not job_id or job_id != Path(job_id).name or job_id.startswith("."):
        raise ValueError(f"{job_id!r} is not a job id")
    source = root / "failed" / job_id
    if not source.is_dir():
        raise ValueError(f"no failed job {job_id!r} in {root / 'failed'}")
    target = root / "jobs" / job_id
    if target.exists():
        raise FileExistsError(f"{target} already exists")
    saved = _read_job(source)
    saved.update(
        state="pending",
        attempts=0,
        refusals=0,
        segment_attempts=0,
        crashes=0,
        transient_failures=0,
        first_send_at=0.0,
        retry_at=0.0,
    )
    saved["last_error"] = f"requeued after: {saved.get('last_error', '')}"
    text = json.dumps(saved, indent=1).encode("utf-8")
    atomic_write(source / "job.json", lambda tmp: tmp.write_bytes(text), mode=0o600)
    (root / "jobs").mkdir(parents=True, exist_ok=True)
    os.rename(source, target)
    return target
