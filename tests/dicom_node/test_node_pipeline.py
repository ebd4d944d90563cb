"""The node's processing pipeline under hostile conditions (issue 17, part B).

A worker that dies, transient and permanent segmentation errors, series spread over several
associations, late instances, and destinations that refuse, fail for a while or cannot take SEGs.
After each hostile case the node must still answer C-ECHO. The segmenters are module-level
functions, so that the node's worker process can import them; they wrap the threshold segmenter
of helpers.py, whose masks the tests compute independently.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from tests.dicom_node.helpers import (
    DestinationSCP,
    echo,
    free_port,
    make_series,
    store_scu,
    threshold_segmenter,
)
from tests.dicom_node.test_node import _check_seg, _start_node

CRASH_ID = "CRASH-EXIT"
KILL_ID = "CRASH-KILL"
FLAKY_ID = "FLAKY-MEM"


def hostile_segmenter(files, output_path: Path) -> Path:
    """Dies (``os._exit``, SIGKILL) or runs out of memory once, depending on the Patient ID."""
    patient = str(pydicom.dcmread(files[0], stop_before_pixels=True).PatientID)
    if patient == CRASH_ID:
        os._exit(3)  # like a crash in native code: no exception, no clean-up
    if patient == KILL_ID:
        os.kill(os.getpid(), signal.SIGKILL)  # like the kernel's OOM killer
    marker = Path(output_path).parent / "flaky-once"
    if patient == FLAKY_ID and not marker.exists():
        marker.write_text("failed once")
        raise MemoryError("cannot allocate the batch")
    return threshold_segmenter(files, output_path)


def garbage_segmenter(files, output_path: Path) -> Path:
    """Writes a file that is not DICOM: the SEG cannot be sent."""
    Path(output_path).write_bytes(b"not a DICOM file")
    return Path(output_path)


def guarded_factory(marker: str):
    """Builds the threshold segmenter, unless ``marker`` exists (like a checkpoint that was deleted)."""
    if Path(marker).exists():
        raise RuntimeError("the checkpoint is gone")
    return threshold_segmenter


def _wait(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _failed_jobs(node) -> list[dict]:
    return [json.loads((f / "job.json").read_text()) for f in sorted((node.queue.root / "failed").iterdir())]


@pytest.fixture
def destination():
    scp = DestinationSCP().start()
    yield scp
    scp.stop()


@pytest.mark.parametrize("patient_id", [CRASH_ID, KILL_ID])
def test_a_series_that_kills_the_worker_fails_after_max_attempts(tmp_path, destination, patient_id):
    node, log = _start_node(
        tmp_path, destination, segmenter=hostile_segmenter, series_timeout=0.5, retry_max_seconds=0.5
    )
    try:
        first_pid = node.worker.pid
        killer = make_series(2, seed=20, patient_id=patient_id)
        assert store_scu(killer, node.port) == [0, 0]
        _wait(lambda: _failed_jobs(node))
        (failed,) = _failed_jobs(node)
        assert failed["series_uid"] == killer[0].SeriesInstanceUID
        assert failed["crashes"] == 2 and failed["segment_attempts"] == 2
        assert "took the segmentation worker down 2 times" in failed["last_error"]
        assert "WorkerDied" in failed["last_error"]
        assert echo(node.port) == 0x0000  # the listener never went down
        # The next series is segmented by a fresh worker.
        good = make_series(2, seed=21)
        assert store_scu(good, node.port) == [0, 0]
        (seg,) = destination.wait_for(1, timeout=60)
        _check_seg(seg, good)
        assert node.worker.pid != first_pid and node.worker.starts >= 3
        with open(f"/proc/{node.worker.pid}/oom_score_adj") as handle:  # the OOM killer's first choice
            assert int(handle.read()) == 500
        assert echo(node.port) == 0x0000
    finally:
        node.stop(drain=False)
        log.close()


def test_transient_and_permanent_segmentation_errors(tmp_path, destination):
    from tests.dicom_node.test_node import quoting_segmenter  # noqa: F401 - importable by the worker

    node, log = _start_node(
        tmp_path, destination, segmenter=hostile_segmenter, series_timeout=0.5, retry_max_seconds=0.5
    )
    try:
        flaky = make_series(2, seed=22, patient_id=FLAKY_ID)
        assert store_scu(flaky, node.port) == [0, 0]
        (seg,) = destination.wait_for(1, timeout=60)  # retried after the MemoryError
        _check_seg(seg, flaky)
        assert "segmentation attempt 1 failed (transient): MemoryError" in log.text
        assert _failed_jobs(node) == []
        # A truncated (unreadable) instance on disk is permanent: failed at once, no retry.
        broken = make_series(2, seed=23)
        node.queue.store_instance(broken[0].SeriesInstanceUID, "1.2.3.4.5", b"DICM but not really")
        _wait(lambda: _failed_jobs(node))
        (failed,) = _failed_jobs(node)
        assert failed["segment_attempts"] == 1 and failed["crashes"] == 0
        assert echo(node.port) == 0x0000
    finally:
        node.stop(drain=False)
        log.close()


def _associate(port: int):
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4", ExplicitVRLittleEndian)  # MR Image Storage
    assoc = ae.associate("127.0.0.1", port, ae_title="LITENEXT")
    assert assoc.is_established
    return assoc


def test_interleaved_associations_and_one_association_per_instance_give_one_seg(tmp_path, destination):
    node, log = _start_node(tmp_path, destination, series_timeout=1.5)
    try:
        interleaved = make_series(4, seed=24)
        first, second = _associate(node.port), _associate(node.port)
        for k, ds in enumerate(interleaved):
            assert (first if k % 2 == 0 else second).send_c_store(ds).Status == 0
        first.release()  # a release seals nothing: the other association is still sending
        time.sleep(0.5)
        second.release()
        per_instance = make_series(3, seed=25)
        for ds in per_instance:  # like a PACS that opens one association per instance
            assert store_scu([ds], node.port) == [0]
        segs = destination.wait_for(2, timeout=60)
        time.sleep(2.0)  # no third SEG may follow
        assert len(destination.received) == 2
        by_series = {str(s.ReferencedSeriesSequence[0].SeriesInstanceUID): s for s in segs}
        _check_seg(by_series[interleaved[0].SeriesInstanceUID], interleaved)
        _check_seg(by_series[per_instance[0].SeriesInstanceUID], per_instance)
        assert echo(node.port) == 0x0000
    finally:
        node.stop(drain=False)
        log.close()


def test_late_instance_gives_a_superseding_seg_of_the_whole_series(tmp_path, destination):
    node, log = _start_node(tmp_path, destination, series_timeout=0.5)
    try:
        series = make_series(3, seed=26)
        assert store_scu(series[:2], node.port) == [0, 0]
        (old,) = destination.wait_for(1, timeout=60)
        _check_seg(old, series[:2])
        assert node.wait_idle(10)
        assert store_scu(series[2:], node.port) == [0]  # the late instance
        segs = destination.wait_for(2, timeout=60)
        assert len(segs) == 2
        new = segs[1]
        _check_seg(new, series)  # all instances, old and new
        assert new.SeriesInstanceUID != old.SeriesInstanceUID
        assert int(new.SeriesNumber) > int(old.SeriesNumber)
        assert new.SOPInstanceUID != old.SOPInstanceUID
        assert f"supersedes the earlier SEG {old.SeriesInstanceUID}" in log.text
        assert echo(node.port) == 0x0000
    finally:
        node.stop(drain=False)
        log.close()


def test_out_of_resources_is_transient(tmp_path):
    destination = DestinationSCP(status=0xA700).start()
    node, log = _start_node(tmp_path, destination, series_timeout=0.5, retry_max_seconds=0.2, max_refusals=1)
    try:
        series = make_series(1, seed=27)
        store_scu(series, node.port)
        _wait(lambda: "not delivered (attempt 3)" in log.text)
        assert "status 0xA700" in log.text and _failed_jobs(node) == []
        (job,) = node.queue.segmented()
        assert job.refusals == 0
        destination.status = 0x0000  # the archive has space again
        (seg,) = destination.wait_for(1, timeout=30)
        _check_seg(seg, series)
        assert echo(node.port) == 0x0000
    finally:
        node.stop(drain=False)
        destination.stop()
        log.close()


def test_destination_without_seg_support_fails_at_once(tmp_path):
    port = free_port()
    ae = AE(ae_title="NOSEG")
    ae.add_supported_context(Verification)  # takes no Segmentation Storage
    server = ae.start_server(("127.0.0.1", port), block=False)
    destination = DestinationSCP("NOSEG", port)  # only for its address; never started
    node, log = _start_node(tmp_path, destination, series_timeout=0.5)
    try:
        store_scu(make_series(1, seed=28), node.port)
        _wait(lambda: _failed_jobs(node))
        (failed,) = _failed_jobs(node)
        assert "accepted no presentation context for Segmentation Storage" in failed["last_error"]
        assert failed["attempts"] == 0
        assert echo(node.port) == 0x0000
    finally:
        node.stop(drain=False)
        server.shutdown()
        log.close()


def test_unreadable_seg_fails_at_once(tmp_path, destination):
    node, log = _start_node(
        tmp_path, destination, segmenter=garbage_segmenter, series_timeout=0.5, warm_up=False
    )
    try:
        store_scu(make_series(1, seed=29), node.port)
        _wait(lambda: _failed_jobs(node))
        (failed,) = _failed_jobs(node)
        assert "the SEG file is unreadable" in failed["last_error"]
        assert destination.received == [] and echo(node.port) == 0x0000
    finally:
        node.stop(drain=False)
        log.close()


def test_a_seg_not_delivered_within_max_send_hours_fails(tmp_path):
    destination = DestinationSCP()  # never listening
    node, log = _start_node(
        tmp_path, destination, series_timeout=0.5, retry_max_seconds=0.2, max_send_hours=1.5 / 3600
    )
    try:
        store_scu(make_series(1, seed=30), node.port)
        _wait(lambda: _failed_jobs(node))
        (failed,) = _failed_jobs(node)
        assert "not delivered within" in failed["last_error"] and failed["attempts"] >= 1
        assert echo(node.port) == 0x0000
    finally:
        node.stop(drain=False)
        log.close()


def test_quiet_seconds_is_a_deprecated_alias_and_closures_are_refused(tmp_path):
    from litenext_monai.dicom_node import DicomNode, parse_destination

    destination = parse_destination("DEST@127.0.0.1:1")
    with pytest.warns(DeprecationWarning, match="series_timeout"):
        node = DicomNode("LITENEXT", 1, destination, tmp_path / "a", threshold_segmenter, quiet_seconds=5)
    assert node.series_timeout == 5.0 == node.quiet_seconds
    with pytest.raises(ValueError, match="cannot be sent to a worker process"):
        DicomNode("LITENEXT", 1, destination, tmp_path / "b", lambda files, out: out)
    in_process = DicomNode("LITENEXT", 1, destination, tmp_path / "c", lambda files, out: out, isolate=False)
    assert type(in_process.worker).__name__ == "InProcessWorker"


def test_a_worker_that_cannot_restart_is_not_counted_against_the_series(tmp_path, destination):
    from litenext_monai.dicom_node import SegmenterFactory

    marker = tmp_path / "checkpoint-gone"
    node, log = _start_node(
        tmp_path,
        destination,
        segmenter=SegmenterFactory(guarded_factory, str(marker)),
        series_timeout=0.5,
        retry_max_seconds=0.5,
        warm_up=False,
    )
    try:
        assert node.health() == (True, "ok")
        marker.write_text("x")
        os.kill(node.worker.pid, signal.SIGKILL)  # dies while idle; its restart will fail
        _wait(lambda: not node.worker.alive())
        # A dead worker that the next series restarts is not a reason for /healthz to fail ...
        assert node.health() == (True, "ok")
        series = make_series(2, seed=31)
        assert store_scu(series, node.port) == [0, 0]
        _wait(lambda: log.text.count("The segmentation worker cannot start") >= 2)
        # ... one that cannot be started is.
        healthy, reason = node.health()
        assert not healthy and reason.startswith("the segmentation worker cannot start (")
        assert "the checkpoint is gone" in reason
        (job,) = node.queue.pending()
        saved = json.loads((job.folder / "job.json").read_text())
        assert (saved["segment_attempts"], saved["crashes"], saved["transient_failures"]) == (0, 0, 0)
        assert echo(node.port) == 0x0000
        marker.unlink()  # the checkpoint is back
        (seg,) = destination.wait_for(1, timeout=60)
        _check_seg(seg, series)
        assert _failed_jobs(node) == []
        assert node.health() == (True, "ok")  # healthy again once the worker started
    finally:
        node.stop(drain=False)
        log.close()
