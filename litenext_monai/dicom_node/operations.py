"""Operator views of a node's storage folder: counts per queue state, failed jobs, requeue.

These read the on-disk layout of :class:`~litenext_monai.dicom_node.jobs.JobQueue` directly
(``incoming/<series>/``, ``jobs/<id>/job.json`` with its ``state``, ``failed/<id>/job.json``), so
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
        "failed": jobs in ``failed/``}``.
    """
    root = Path(storage)
    counts: Counter[str] = Counter()
    counts["incoming"] = len(_job_folders(root / "incoming"))
    counts["pending"] = 0
    counts["segmented"] = 0
    for folder in _job_folders(root / "jobs"):
        counts[str(_read_job(folder).get("state") or "unknown")] += 1
    counts["failed"] = len(_job_folders(root / "failed"))
    return dict(counts)


@dataclass(frozen=True)
class FailedJob:
    """A job in ``failed/``: its id, series UID, attempts and why it failed (patient data redacted)."""

    job_id: str
    series_uid: str
    attempts: int
    reason: str


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
            )
        )
    return found


def requeue(storage: str | os.PathLike, job_id: str) -> Path:
    """Move a failed job back to ``jobs/`` as ``pending``, with its attempt counters reset.

    The job is segmented again (its old SEG, if any, is replaced). A running node picks it up at its
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
    saved.update(state="pending", attempts=0, refusals=0)
    saved["last_error"] = f"requeued after: {saved.get('last_error', '')}"
    text = json.dumps(saved, indent=1).encode("utf-8")
    atomic_write(source / "job.json", lambda tmp: tmp.write_bytes(text))
    os.chmod(source / "job.json", 0o600)
    (root / "jobs").mkdir(parents=True, exist_ok=True)
    os.rename(source, target)
    return target
