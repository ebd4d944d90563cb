"""The on-disk job queue: atomic instances, sealing by series, recovery after a crash."""

from __future__ import annotations

import json
import math
import os
import time

from litenext_monai.dicom_node.jobs import MAX_ERROR_CHARS, JobQueue, backoff_seconds, safe_name
from litenext_monai.dicom_node.redact import PatientRedactor


def _store(queue: JobQueue, series: str, n: int) -> list[str]:
    uids = [f"1.2.3.{series[-1]}.{i}" for i in range(n)]
    for uid in uids:
        queue.store_instance(series, uid, f"data of {uid}".encode())
    return uids


def test_seal_groups_instances_by_series(tmp_path):
    queue = JobQueue(tmp_path)
    _store(queue, "1.2.840.1", 3)
    _store(queue, "1.2.840.2", 2)
    job = queue.seal("1.2.840.1")
    assert job is not None and job.series_uid == "1.2.840.1"
    assert [p.read_bytes() for p in job.instance_files()] == [
        f"data of 1.2.3.1.{i}".encode() for i in range(3)
    ]
    assert queue.seal("1.2.840.1") is None  # nothing new received since
    assert queue.incoming_series() == 1
    assert json.loads((job.folder / "job.json").read_text())["state"] == "pending"
    assert list((tmp_path / "tmp").iterdir()) == []


def test_retransmitted_instance_replaces_the_first_copy(tmp_path):
    queue = JobQueue(tmp_path)
    queue.store_instance("1.2.3", "1.2.3.4", b"first")
    queue.store_instance("1.2.3", "1.2.3.4", b"second")
    job = queue.seal("1.2.3")
    assert [p.read_bytes() for p in job.instance_files()] == [b"second"]


def test_hostile_uids_stay_inside_the_storage_folder(tmp_path):
    queue = JobQueue(tmp_path / "store")
    path = queue.store_instance("../../escape", "../../../etc/passwd", b"x")
    assert (tmp_path / "store") in path.parents
    assert safe_name("1.2.840.10008") == "1.2.840.10008"
    assert "/" not in safe_name("../x") and safe_name("../x") != safe_name("../y")
    job = queue.seal("../../escape")
    assert job.series_uid == "../../escape" and (tmp_path / "store" / "jobs") in job.folder.parents
    assert [p.read_bytes() for p in job.instance_files()] == [b"x"]


def test_seal_idle_waits_for_the_quiet_time(tmp_path):
    queue = JobQueue(tmp_path)
    _store(queue, "1.2.840.1", 1)
    assert queue.seal_idle(30.0) == []
    time.sleep(0.2)
    jobs = queue.seal_idle(0.1)
    assert [j.series_uid for j in jobs] == ["1.2.840.1"]


def test_life_cycle_and_failed_jobs(tmp_path):
    queue = JobQueue(tmp_path)
    _store(queue, "1.2.840.1", 1)
    _store(queue, "1.2.840.2", 1)
    first, second = queue.seal("1.2.840.1"), queue.seal("1.2.840.2")
    assert queue.next_pending() is first  # oldest first
    first.seg_path.write_bytes(b"seg")
    queue.mark_segmented(first)
    assert queue.pending() == [second] and queue.segmented() == [first]
    queue.record_send_failure(first, "refused", retry_in=60)
    assert queue.next_to_send(time.monotonic()) is None and queue.next_to_send() is first
    queue.mark_sent(first)
    assert not first.folder.exists() and len(queue) == 1
    failed = queue.mark_failed(second, "cannot segment")
    assert failed.parent == tmp_path / "failed" and len(queue) == 0
    saved = json.loads((failed / "job.json").read_text())
    assert {k: saved[k] for k in ("series_uid", "state", "attempts", "refusals", "last_error")} == {
        "series_uid": "1.2.840.2",
        "state": "failed",
        "attempts": 0,
        "refusals": 0,
        "last_error": "cannot segment",
    }


def test_recover_after_a_crash_at_any_point(tmp_path):
    """A new queue on the same folder finds what a killed node left, in every intermediate state."""
    queue = JobQueue(tmp_path)
    _store(queue, "1.2.840.1", 2)
    pending = queue.seal("1.2.840.1")
    _store(queue, "1.2.840.2", 1)
    segmented = queue.seal("1.2.840.2")
    segmented.seg_path.write_bytes(b"seg")
    queue.mark_segmented(segmented)
    _store(queue, "1.2.840.3", 1)
    stale = queue.seal("1.2.840.3")
    stale.seg_path.write_bytes(b"seg")
    queue.mark_segmented(stale)
    stale.seg_path.unlink()  # state says segmented but the SEG is gone: segment again
    _store(queue, "1.2.840.4", 3)  # received, never sealed (association aborted, then kill -9)
    (tmp_path / "tmp" / "half-written.dcm").write_bytes(b"partial")
    (pending.folder / ".seg.dcm.tmp").write_bytes(b"partial")
    crashed_seal = tmp_path / "jobs" / "00000000000000000001-0001-x"
    crashed_seal.mkdir()  # killed between creating a job folder and moving the series in
    moved_no_state = tmp_path / "jobs" / "00000000000000000002-0001-y" / "instances"
    moved_no_state.mkdir(parents=True)  # killed after moving the series, before job.json
    (moved_no_state / "1.2.3.dcm").write_bytes(b"x")

    restarted = JobQueue(tmp_path)
    counts = restarted.recover()
    assert counts == {"pending": 4, "segmented": 1, "sealed_incoming": 1}
    states = {j.series_uid: j.state for j in restarted.pending() + restarted.segmented()}
    assert states["1.2.840.1"] == "pending"
    assert states["1.2.840.2"] == "segmented"
    assert states["1.2.840.3"] == "pending"
    assert states["1.2.840.4"] == "pending"
    assert len([j for j in restarted.pending() if j.series_uid == "1.2.840.4"][0].instance_files()) == 3
    assert not crashed_seal.exists()
    assert list((tmp_path / "tmp").iterdir()) == []
    assert not (pending.folder / ".seg.dcm.tmp").exists()
    assert os.listdir(tmp_path / "incoming") == []


def test_seal_all_includes_series_left_by_an_earlier_run(tmp_path):
    JobQueue(tmp_path).store_instance("1.2.5", "1.2.5.1", b"x")
    queue = JobQueue(tmp_path)
    assert [j.series_uid for j in queue.seal_all()] == ["1.2.5"]


def test_backoff_is_exponential_capped_and_never_overflows():
    assert [backoff_seconds(n, base=1.0, cap=300.0) for n in range(1, 11)] == [
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        256,
        300,
    ]
    assert backoff_seconds(0) == 1.0
    for huge in (1024, 1025, 10**6, 10**18):  # 2.0**1024 would raise OverflowError
        delay = backoff_seconds(huge, base=1.0, cap=300.0)
        assert delay == 300.0 and math.isfinite(delay)


def test_send_retry_times_are_per_job_and_the_earliest_due_goes_first(tmp_path):
    queue = JobQueue(tmp_path)
    jobs = []
    for k in range(3):
        _store(queue, f"1.2.840.{k + 1}", 1)
        job = queue.seal(f"1.2.840.{k + 1}")
        job.seg_path.write_bytes(b"seg")
        queue.mark_segmented(job)
        jobs.append(job)
    stuck, second, third = jobs
    queue.record_send_failure(stuck, "destination down", retry_in=3600)  # the oldest job is stuck
    queue.record_send_failure(third, "destination down", retry_in=0.0)
    now = time.monotonic()
    assert queue.claim_to_send(now) is second  # due (never tried), oldest of the due ones
    assert queue.claim_to_send(now) is third  # the stuck job does not block it
    assert queue.claim_to_send(now) is None  # the second and third are held, the first not due
    assert queue.next_due("segmented") == stuck.not_before
    queue.release(second)
    assert queue.claim_to_send(now) is second
    # the retry time survives a restart (wall clock in job.json)
    restarted = JobQueue(tmp_path)
    restarted.recover()
    again = {j.series_uid: j for j in restarted.segmented()}
    assert again["1.2.840.1"].not_before > time.monotonic() + 3000
    assert restarted.claim_to_send(time.monotonic()).series_uid == "1.2.840.2"


def test_errors_in_job_files_are_redacted_and_bounded(tmp_path):
    redactor = PatientRedactor()
    redactor.add({"Kowalska^Anna", "Kowalska", "Anna", "PID-90210-XQ"})
    queue = JobQueue(tmp_path, redact=redactor.redact)
    _store(queue, "1.2.840.1", 1)
    job = queue.seal("1.2.840.1")
    queue.record_segment_failure(
        job, "ValueError: bad name 'Kowalska^Anna' of PID-90210-XQ" + "x" * 900, retry_in=1.0, crash=False
    )
    text = (job.folder / "job.json").read_text()
    assert "Kowalska" not in text and "PID-90210" not in text and "[redacted]" in text
    assert len(json.loads(text)["last_error"]) == MAX_ERROR_CHARS
    failed = queue.mark_failed(job, "TypeError: Anna was here")
    assert json.loads((failed / "job.json").read_text())["last_error"] == "TypeError: [redacted] was here"


def test_an_attempt_without_an_outcome_counts_as_a_crash_after_a_restart(tmp_path):
    queue = JobQueue(tmp_path)
    _store(queue, "1.2.840.1", 1)
    job = queue.seal("1.2.840.1")
    queue.record_segment_start(job)
    queue.record_segment_failure(job, "MemoryError: ", retry_in=0.0, crash=False)  # accounted for
    queue.record_segment_start(job)  # ... and then the node was killed during this attempt
    saved = json.loads((job.folder / "job.json").read_text())
    assert saved["segment_attempts"] == 2 and saved["crashes"] == 0
    restarted = JobQueue(tmp_path)
    restarted.recover()
    (again,) = restarted.pending()
    assert (again.segment_attempts, again.crashes, again.transient_failures) == (2, 1, 1)


def test_late_instances_join_a_waiting_job_or_start_a_new_generation(tmp_path):
    queue = JobQueue(tmp_path)
    queue.store_instance("1.2.840.1", "1.2.3.1", b"a")
    first = queue.seal("1.2.840.1")
    queue.store_instance("1.2.840.1", "1.2.3.2", b"b")
    assert queue.seal("1.2.840.1") is first  # not started yet: the late instance joins it
    assert [p.name for p in first.instance_files()] == ["1.2.3.1.dcm", "1.2.3.2.dcm"]
    assert queue.claim_pending() is first  # now being segmented
    queue.store_instance("1.2.840.1", "1.2.3.3", b"c")
    second = queue.seal("1.2.840.1")
    assert second is not first and second.generation == 2
    assert [p.read_bytes() for p in second.instance_files()] == [b"a", b"b", b"c"]
    first.seg_path.write_bytes(b"seg")
    queue.mark_segmented(first)
    queue.release(first)
    queue.mark_sent(first, "1.2.9.1")
    second.seg_path.write_bytes(b"seg")
    queue.mark_segmented(second)
    queue.mark_sent(second, "1.2.9.2")
    assert queue.sent_series("1.2.840.1")["generation"] == 2
    # After delivery: the kept instances make the next SEG cover the whole series.
    queue.store_instance("1.2.840.1", "1.2.3.2", b"B")  # a retransmission replaces its copy
    queue.store_instance("1.2.840.1", "1.2.3.4", b"d")
    third = queue.seal("1.2.840.1")
    assert third.generation == 3
    assert [p.read_bytes() for p in third.instance_files()] == [b"a", b"B", b"c", b"d"]
    third.seg_path.write_bytes(b"seg")
    queue.mark_segmented(third)
    queue.mark_sent(third, "1.2.9.3")
    assert queue.prune_sent(time.time() + 25 * 3600) == 1  # kept 24 h by default
    assert not (tmp_path / "sent" / "1.2.840.1" / "instances").exists()
    assert queue.sent_series("1.2.840.1")["generation"] == 3  # the generation is remembered
    queue.store_instance("1.2.840.1", "1.2.3.5", b"e")
    assert queue.seal("1.2.840.1").generation == 4


def test_recover_can_leave_incoming_series_to_their_timeout(tmp_path):
    JobQueue(tmp_path).store_instance("1.2.5", "1.2.5.1", b"x")
    queue = JobQueue(tmp_path)
    assert queue.recover(seal_incoming=False)["sealed_incoming"] == 0
    assert queue.seal_idle(30.0) == [] and queue.incoming_series() == 1
    assert [j.series_uid for j in queue.seal_idle(0.0)] == ["1.2.5"]


def test_file_mode_makes_every_queue_file_private_whatever_the_umask(tmp_path):
    import stat

    def mode(path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    old = os.umask(0o022)  # files would be 0644 without file_mode
    try:
        queue = JobQueue(tmp_path / "private", file_mode=0o600)
        instance = queue.store_instance("1.2.3", "1.2.3.1", b"DICM data")
        job = queue.seal("1.2.3")
        job.seg_path.write_bytes(b"SEG")
        queue.mark_segmented(job)
        job_json = job.folder / "job.json"
        assert (mode(job_json), mode(job.instance_files()[0])) == (0o600, 0o600)
        queue.mark_sent(job, "1.2.3.9")
        record = tmp_path / "private" / "sent" / safe_name("1.2.3") / "series.json"
        assert mode(record) == 0o600 and json.loads(record.read_text())["seg_series_uid"] == "1.2.3.9"
        assert not instance.exists()  # moved into the job, then kept under sent/

        default = JobQueue(tmp_path / "default")  # file_mode=None: as before, the umask decides
        default.store_instance("1.2.4", "1.2.4.1", b"DICM data")
        (plain,) = default.seal("1.2.4").instance_files()
        assert mode(plain) == 0o644
    finally:
        os.umask(old)


def test_storage_quota_counts_a_hard_linked_instance_once(tmp_path):
    from litenext_monai.dicom_node.limits import folder_bytes

    (tmp_path / "sent" / "s" / "instances").mkdir(parents=True)
    (tmp_path / "jobs" / "j" / "instances").mkdir(parents=True)
    kept = tmp_path / "sent" / "s" / "instances" / "a.dcm"
    kept.write_bytes(b"x" * 1000)
    os.link(kept, tmp_path / "jobs" / "j" / "instances" / "a.dcm")  # as a later generation reuses it
    (tmp_path / "jobs" / "j" / "job.json").write_bytes(b"y" * 10)
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / "f.dcm").write_bytes(b"z" * 100)
    assert folder_bytes(tmp_path) == 1000 + 10 + 100
