"""The DICOM node in-process, between a pynetdicom sender and a pynetdicom destination SCP.

The segmenter here is a plain threshold (tests/dicom_node/helpers.py), so every SEG that comes
back can be compared pixel by pixel with a mask computed from the sent pixels; the real model
runs in test_node_orthanc.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import highdicom as hd
import numpy as np
import pynetdicom.association
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import BasicTextSRStorage, ExplicitVRLittleEndian, RTPlanStorage, generate_uid

from litenext_monai.dicom_node import DicomNode, PatientRedactor, is_image_storage, parse_destination
from litenext_monai.dicom_node.receiver import (
    STATUS_CORRUPT_PIXEL_DATA,
    STATUS_DATASET_MISMATCH,
    STATUS_SOP_CLASS_NOT_SUPPORTED,
)
from tests.dicom_node.helpers import (
    PATIENT_ID,
    PATIENT_NAME,
    DestinationSCP,
    NodeLog,
    echo,
    expected_mask,
    free_port,
    make_series,
    store_scu,
    threshold_segmenter,
)


def _start_node(tmp_path, destination: DestinationSCP, segmenter=threshold_segmenter, **kwargs):
    redactor = PatientRedactor()
    log = NodeLog(redactor)
    node = DicomNode(
        "LITENEXT",
        free_port(),
        parse_destination(destination.address),
        tmp_path / "storage",
        segmenter,
        host="127.0.0.1",
        redactor=redactor,
        **{"allow": ["*@127.0.0.1"], **kwargs},
    )
    node.start()
    return node, log


@pytest.fixture
def destination() -> Iterator[DestinationSCP]:
    scp = DestinationSCP().start()
    yield scp
    scp.stop()


@pytest.fixture
def node(tmp_path, destination):
    node, log = _start_node(tmp_path, destination, series_timeout=1.0)
    node.log = log
    yield node
    node.stop(drain=False)
    log.close()


def _check_seg(seg: Dataset, series: list[Dataset]) -> None:
    """The SEG refers to every sent instance, keeps the study, and holds the expected mask."""
    assert seg.StudyInstanceUID == series[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == series[0].FrameOfReferenceUID
    assert seg.SegmentationType == "BINARY"
    referenced = {
        item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == {d.SOPInstanceUID for d in series}
    ordered = sorted(series, key=lambda d: float(d.ImagePositionPatient[2]))
    mask = hd.seg.Segmentation.from_dataset(seg).get_pixels_by_source_instance(
        source_sop_instance_uids=[d.SOPInstanceUID for d in ordered], segment_numbers=[1]
    )[..., 0]
    np.testing.assert_array_equal(mask, expected_mask(series))


def test_image_classes():
    assert is_image_storage("1.2.840.10008.5.1.4.1.1.2")  # CT
    assert is_image_storage("1.2.840.10008.5.1.4.1.1.1.1")  # DX for presentation
    assert not is_image_storage(RTPlanStorage)
    assert not is_image_storage(BasicTextSRStorage)
    assert not is_image_storage("1.2.840.10008.5.1.4.1.1.66.4")  # a SEG is no input


def test_echo_and_series_round_trip(node, destination):
    assert echo(node.port) == 0x0000
    series = make_series(3, seed=1)
    assert store_scu(series[::-1], node.port) == [0, 0, 0]
    segs = destination.wait_for(1, timeout=60)
    assert len(segs) == 1
    _check_seg(segs[0], series)
    assert node.wait_idle(10)
    assert not any((node.queue.root / "jobs").iterdir())  # delivered jobs are removed


def test_non_image_objects_are_refused(node, destination):
    for sop_class in (RTPlanStorage, BasicTextSRStorage):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "RTPLAN"
        assert store_scu([ds], node.port) == [STATUS_SOP_CLASS_NOT_SUPPORTED]
        assert f"Refused instance {ds.SOPInstanceUID}" in node.log.text
    assert node.queue.incoming_series() == 0 and len(node.queue) == 0


def test_corrupt_instances_get_a_failure_status_and_the_node_keeps_serving(node, destination, monkeypatch):
    truncated = make_series(1, seed=2)[0]
    truncated.PixelData = truncated.PixelData[:1000]
    assert store_scu([truncated], node.port) == [STATUS_CORRUPT_PIXEL_DATA]
    assert (
        f"Refused instance {truncated.SOPInstanceUID} from TESTSCU: Pixel Data holds 1000 bytes"
        in node.log.text
    )

    # A sender whose byte stream breaks off after 300 bytes (inside the data set).
    cut = make_series(1, seed=3)[0]
    encode = pynetdicom.association.encode
    monkeypatch.setattr(pynetdicom.association, "encode", lambda *a, **k: encode(*a, **k)[:300])
    assert store_scu([cut], node.port) == [STATUS_DATASET_MISMATCH]
    monkeypatch.undo()
    assert f"Refused instance {cut.SOPInstanceUID}" in node.log.text

    series = make_series(2, seed=4)
    assert store_scu(series, node.port) == [0, 0]
    segs = destination.wait_for(1, timeout=60)
    assert len(segs) == 1
    _check_seg(segs[0], series)


def test_aborted_association_is_segmented_after_the_series_timeout(tmp_path, destination):
    node, log = _start_node(tmp_path, destination, series_timeout=1.0)
    try:
        series = make_series(2, seed=5)
        assert store_scu(series, node.port, release=False) == [0, 0]
        assert echo(node.port) == 0x0000  # the abort did not hurt the node
        assert destination.wait_for(1, timeout=60)
        _check_seg(destination.received[0], series)
        assert "ended without release after 1 series" in log.text and "no new instance for 1 s" in log.text
    finally:
        node.stop(drain=False)
        log.close()


def test_unreachable_destination_is_retried_until_it_answers(tmp_path):
    destination = DestinationSCP()  # not listening yet
    node, log = _start_node(tmp_path, destination, retry_max_seconds=0.5, series_timeout=0.5)
    try:
        series = make_series(1, seed=6)
        store_scu(series, node.port)
        deadline = time.monotonic() + 60
        while "not delivered (attempt 2)" not in log.text and time.monotonic() < deadline:
            time.sleep(0.1)
        assert destination.received == [] and len(node.queue) == 1
        destination.start()
        assert len(destination.wait_for(1, timeout=30)) == 1
        _check_seg(destination.received[0], series)
    finally:
        node.stop(drain=False)
        destination.stop()
        log.close()


def test_refused_seg_is_kept_in_failed_after_max_refusals(tmp_path):
    destination = DestinationSCP(status=0xC000).start()  # cannot understand, for ever
    node, log = _start_node(tmp_path, destination, retry_max_seconds=0.1, max_refusals=2, series_timeout=0.5)
    try:
        store_scu(make_series(1, seed=7), node.port)
        deadline = time.monotonic() + 60
        while not any((node.queue.root / "failed").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        (failed,) = (node.queue.root / "failed").iterdir()
        assert (failed / "seg.dcm").is_file() and len(list((failed / "instances").iterdir())) == 1
        assert "status 0xC000" in log.text and "refused 2 times" in log.text
        assert len(node.queue) == 0
    finally:
        node.stop(drain=False)
        destination.stop()
        log.close()


def quoting_segmenter(files, output_path):
    """Like a library that quotes an invalid attribute value in its error message (a ValueError)."""
    raise ValueError(f"invalid PatientName {PATIENT_NAME!r} for patient {PATIENT_ID}")


def test_failed_segmentation_is_logged_without_patient_data(tmp_path, destination):
    # No warm-up: this segmenter quotes the test's constants, not the data it is given.
    node, log = _start_node(
        tmp_path, destination, segmenter=quoting_segmenter, warm_up=False, series_timeout=0.5
    )
    try:
        series = make_series(1, seed=8)
        assert store_scu(series, node.port) == [0]
        deadline = time.monotonic() + 30
        while "could not be segmented" not in log.text and time.monotonic() < deadline:
            time.sleep(0.1)
        assert f"Series {series[0].SeriesInstanceUID}" in log.text and "[redacted]" in log.text
        (failed,) = (node.queue.root / "failed").iterdir()  # a ValueError fails at once
        stored = (failed / "job.json").read_text()
        assert "ValueError" in stored and "[redacted]" in stored
        for secret in (PATIENT_NAME, PATIENT_ID, "Kowalska", "Anna"):
            assert secret not in log.text and secret not in stored
        assert echo(node.port) == 0x0000
    finally:
        node.stop(drain=False)
        log.close()


def test_stop_drains_what_was_received(tmp_path, destination):
    node, log = _start_node(tmp_path, destination, series_timeout=600.0)
    try:
        series = make_series(2, seed=9)
        store_scu(series, node.port, release=False)  # nothing would seal this for 10 minutes
        time.sleep(0.5)
        assert destination.received == []
    finally:
        node.stop(drain=True)
        log.close()
    assert len(destination.received) == 1
    _check_seg(destination.received[0], series)
    assert "Stopped: 1 SEGs sent, 0 series failed, 0 jobs left" in log.text


def test_port_in_use_raises_and_the_node_can_be_stopped(tmp_path, destination):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        node = DicomNode(
            "LITENEXT",
            busy.getsockname()[1],
            parse_destination(destination.address),
            tmp_path / "storage",
            threshold_segmenter,
            host="127.0.0.1",
        )
        with pytest.raises(OSError):
            node.start()
        node.stop(drain=False)
