"""The on-disk job queue: atomic instances, sealing by series, recovery after a crash."""

from __future__ import annotations

import json
import os
import time

from litenext_monai.dicom_node.jobs import JobQueue, safe_name


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
    assert json.loads((failed / "job.json").read_text()) == {
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
