"""The node's network edge against hostile and careless peers: access control, TLS, limits, modes.

The node runs in-process with the threshold segmenter (tests/dicom_node/helpers.py); the peers are
plain pynetdicom clients that do what a hostile sender would. After every hostile case the node must
still answer C-ECHO. TLS and access control against a real Orthanc are in test_tls_orthanc.py.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    HEVCMP51,
    MPEG2MPML,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000MCLossless,
    JPEGBaseline8Bit,
    MRImageStorage,
    RTPlanStorage,
    generate_uid,
)
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from litenext_monai.dicom_node import DicomNode, Limits, PatientRedactor, parse_destination
from litenext_monai.dicom_node.receiver import STATUS_OUT_OF_RESOURCES, STATUS_TOO_LARGE
from tests.dicom_node.certs import TestPKI
from tests.dicom_node.helpers import DestinationSCP, NodeLog, free_port, make_series, threshold_segmenter

LOCAL_RULES = ["TESTSCU@127.0.0.1", "ECHOSCU@127.0.0.1"]
JPEG_XL_LOSSLESS = "1.2.840.10008.1.2.4.110"  # not in pydicom 3.0's uid module


@pytest.fixture
def destination() -> Iterator[DestinationSCP]:
    scp = DestinationSCP().start()
    yield scp
    scp.stop()


@pytest.fixture
def start_node(tmp_path, destination):
    """``start_node(**DicomNode options)`` → a started node with ``node.log``; stopped afterwards."""
    started = []

    def start(storage: Path | None = None, **kwargs) -> DicomNode:
        redactor = PatientRedactor()
        log = NodeLog(redactor)
        kwargs.setdefault("allow", [] if kwargs.get("allow_any") else LOCAL_RULES)
        kwargs.setdefault("warm_up", False)
        node = DicomNode(
            "LITENEXT",
            free_port(),
            parse_destination(destination.address),
            storage or tmp_path / f"storage{len(started)}",
            threshold_segmenter,
            host="127.0.0.1",
            redactor=redactor,
            **kwargs,
        )
        node.log = log
        started.append(node)
        node.start()
        return node

    yield start
    for node in started:
        node.stop(drain=False)
        node.log.close()


def associate(
    port: int,
    contexts: list[tuple[str, list[str]]] | None = None,
    *,
    calling: str = "TESTSCU",
    called: str = "LITENEXT",
    bind: str = "127.0.0.1",
    tls=None,
):
    ae = AE(ae_title=calling)
    for abstract, syntaxes in contexts or [(Verification, [ExplicitVRLittleEndian])]:
        ae.add_requested_context(abstract, syntaxes)
    ae.acse_timeout = ae.connection_timeout = ae.network_timeout = ae.dimse_timeout = 10
    return ae.associate("127.0.0.1", port, ae_title=called, bind_address=(bind, 0), tls_args=tls)


def echo_ok(port: int, tls=None) -> bool:
    """C-ECHO as ECHOSCU (allowed in every test): the node still serves."""
    assoc = associate(port, calling="ECHOSCU", tls=tls)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return "Status" in status and status.Status == 0x0000


def store(
    port: int, datasets: list[Dataset], syntax: str = ExplicitVRLittleEndian, release: bool = True, **kwargs
) -> list:
    """C-STORE on one association; a status per dataset, ``None`` where none came back.

    Without ``release`` the association is aborted, so the instances stay in ``incoming/`` (quiet
    time 60 s) where the test can look at them.
    """
    classes = sorted({str(d.SOPClassUID) for d in datasets})
    assoc = associate(port, [(c, [syntax]) for c in classes], **kwargs)
    assert assoc.is_established, "the node refused the association"
    statuses = []
    for ds in datasets:
        response = assoc.send_c_store(ds)
        statuses.append(int(response.Status) if "Status" in response else None)
    if assoc.is_established:
        assoc.release() if release else assoc.abort()
    return statuses


def _stored_files(node: DicomNode) -> list[Path]:
    return sorted(p for p in (node.queue.root / "incoming").rglob("*.dcm"))


# -- access control ---------------------------------------------------------------------------------


def test_unlisted_ae_title_is_refused(start_node):
    node = start_node(allow=["ECHOSCU@127.0.0.1"])
    assoc = associate(node.port, calling="INTRUDER")
    assert assoc.is_rejected and not assoc.is_established
    assert "calling 'INTRUDER' refused: calling AE title not allowed" in node.log.text
    assert "Association from 127.0.0.1:" in node.log.text
    assert echo_ok(node.port)
    assert "calling 'ECHOSCU' accepted" in node.log.text


def test_unlisted_address_is_refused(start_node):
    node = start_node(allow=["TESTSCU@127.0.0.2", "ECHOSCU@127.0.0.1"])
    refused = associate(node.port, calling="TESTSCU", bind="127.0.0.1")
    assert refused.is_rejected
    unknown = associate(node.port, calling="INTRUDER", bind="127.0.0.2")
    # A wrong address and an unknown title look the same to the peer: nothing to enumerate.
    rejections = [(a.acceptor.primitive.result, a.acceptor.primitive.diagnostic) for a in (refused, unknown)]
    assert rejections == [(0x01, 0x03), (0x01, 0x03)]
    assert "calling 'TESTSCU' refused: address not allowed for this AE title" in node.log.text
    accepted = associate(node.port, calling="TESTSCU", bind="127.0.0.2")
    assert accepted.is_established
    accepted.release()
    assert "Association from 127.0.0.2:" in node.log.text
    assert echo_ok(node.port)


def test_network_rule_and_called_title(start_node):
    node = start_node(allow=["*@127.0.0.0/30"])
    wrong_called = associate(node.port, calling="ECHOSCU", called="NOTTHENODE")
    assert wrong_called.is_rejected
    assert "refused: called AE title 'NOTTHENODE' is not 'LITENEXT'" in node.log.text
    assert associate(node.port, calling="ANYONE", bind="127.0.0.3").is_established is True
    assert associate(node.port, calling="ANYONE", bind="127.0.0.4").is_rejected
    assert echo_ok(node.port)


def test_without_rules_everything_is_refused_and_allow_any_warns(start_node, tmp_path):
    closed = start_node(allow=[])
    assert not echo_ok(closed.port)
    assert "calling 'ECHOSCU' refused" in closed.log.text
    open_node = start_node(allow_any=True)
    assert echo_ok(open_node.port)
    assert store(open_node.port, make_series(1, seed=1), calling="WHOEVER") == [0]
    assert "--allow-any: associations from any AE title and any address are accepted" in open_node.log.text
    with pytest.raises(ValueError, match="exclude each other"):
        DicomNode(
            "X",
            1,
            parse_destination("A@h:1"),
            tmp_path / "s",
            threshold_segmenter,
            allow=["A@127.0.0.1"],
            allow_any=True,
        )


def test_too_many_associations_are_rejected(start_node):
    node = start_node(limits=Limits(max_associations=1))
    held = associate(node.port, calling="TESTSCU")
    assert held.is_established
    try:
        second = associate(node.port, calling="ECHOSCU")
        assert second.is_rejected
        assert "calling 'ECHOSCU' refused: too many associations" in node.log.text
    finally:
        held.release()
    deadline = time.monotonic() + 10
    while not echo_ok(node.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert echo_ok(node.port)


# -- transfer syntaxes and Deflate ------------------------------------------------------------------


def test_undecodable_transfer_syntaxes_and_deflate_are_rejected_at_negotiation(start_node):
    node = start_node()
    refused = [JPEG_XL_LOSSLESS, MPEG2MPML, HEVCMP51, JPEG2000MCLossless, DeflatedExplicitVRLittleEndian]
    assoc = associate(node.port, [(MRImageStorage, [ts]) for ts in [ExplicitVRLittleEndian, *refused]])
    assert assoc.is_established
    accepted = {cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
    rejected = {cx.transfer_syntax[0] for cx in assoc.rejected_contexts}
    assoc.release()
    assert accepted == {ExplicitVRLittleEndian}
    assert rejected == set(refused)
    assert "(1 presentation contexts accepted, 5 rejected)" in node.log.text
    deflating = start_node(limits=Limits(accept_deflate=True))
    assoc = associate(deflating.port, [(MRImageStorage, [DeflatedExplicitVRLittleEndian])])
    assert [cx.transfer_syntax[0] for cx in assoc.accepted_contexts] == [DeflatedExplicitVRLittleEndian]
    assoc.release()
    assert echo_ok(node.port) and echo_ok(deflating.port)


def test_deflate_bomb_is_refused_and_a_small_deflated_instance_stored(start_node):
    node = start_node(limits=Limits(accept_deflate=True, max_instance_mb=1))
    bomb = make_series(1, size=4096, seed=2)[0]  # 32 MiB of pixels ...
    bomb.PixelData = bytes(len(bomb.PixelData))  # ... of zeros: deflates to about 32 KiB
    small = make_series(1, seed=3)[0]
    statuses = store(node.port, [bomb, small], syntax=DeflatedExplicitVRLittleEndian, release=False)
    assert statuses == [STATUS_TOO_LARGE, 0]
    assert (
        f"Refused instance {bomb.SOPInstanceUID} from TESTSCU: the deflated data set inflates to more than 1 MiB"
        in (node.log.text)
    )
    (stored,) = _stored_files(node)
    assert stored.name == f"{small.SOPInstanceUID}.dcm"
    assert echo_ok(node.port)


# -- sizes ------------------------------------------------------------------------------------------


def test_oversized_instance_is_refused_and_nothing_stored(start_node):
    node = start_node(limits=Limits(max_instance_mb=0.01))  # 10 KiB
    big = make_series(1, size=80, seed=4)[0]  # 80*80*2 = 12.5 KiB of pixels
    small = make_series(1, size=32, seed=5)[0]
    assert store(node.port, [big, small], release=False) == [STATUS_TOO_LARGE, 0]
    assert "bytes is more than 0.01 MiB (--max-instance-mb)" in node.log.text
    assert [p.name for p in _stored_files(node)] == [f"{small.SOPInstanceUID}.dcm"]
    # Far past the limit, the association is aborted while the data set is still arriving.
    huge = make_series(1, size=256, seed=6)[0]  # 128 KiB
    assert store(node.port, [huge]) == [None]
    assert f"aborted: a data set passed {2 * int(0.01 * 1024**2)} bytes while arriving" in node.log.text
    assert len(_stored_files(node)) == 1
    assert echo_ok(node.port)


def test_decoded_pixel_size_is_checked_from_the_header(start_node):
    node = start_node(limits=Limits(max_pixel_mb=64))
    ds = make_series(1, seed=7)[0]
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.Rows, ds.Columns, ds.NumberOfFrames = 8192, 8192, 2  # 8192*8192*2 frames*16 bits = 256 MiB
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xd9", b"\xff\xd8\xff\xd9"])
    ds["PixelData"].VR = "OB"
    assert store(node.port, [ds], syntax=JPEGBaseline8Bit) == [STATUS_TOO_LARGE]
    assert "decoded pixel data would be 256.0 MiB, more than 64 MiB (--max-pixel-mb)" in node.log.text
    assert _stored_files(node) == []
    assert echo_ok(node.port)


# -- disk -------------------------------------------------------------------------------------------


def test_storage_quota_refuses_with_a700_then_accepts_once_space_is_freed(tmp_path):
    destination = DestinationSCP()  # not listening yet: SEGs pile up in the queue
    redactor = PatientRedactor()
    log = NodeLog(redactor)
    # Each 64×64 instance is about 9 KiB on disk; 40 KiB is full after a few series.
    node = DicomNode(
        "LITENEXT",
        free_port(),
        parse_destination(destination.address),
        tmp_path / "storage",
        threshold_segmenter,
        host="127.0.0.1",
        redactor=redactor,
        allow=LOCAL_RULES,
        warm_up=False,
        retry_max_seconds=0.5,
        series_timeout=0.5,
        keep_sent_hours=0,  # kept sent/ instances count against the quota too: free them at once
        limits=Limits(max_storage_gb=40 * 1024 / 1024**3, min_free_gb=None),
    )
    node.start()
    try:
        statuses = []
        for seed in range(10):
            statuses += store(node.port, make_series(1, seed=10 + seed))
            if statuses[-1] == STATUS_OUT_OF_RESOURCES:
                break
            time.sleep(1.1)  # let the guard measure the folder again
        assert statuses[-1] == STATUS_OUT_OF_RESOURCES and set(statuses[:-1]) == {0}, statuses
        assert "storage quota reached" in log.text and "--max-storage-gb" in log.text
        assert echo_ok(node.port)
        destination.start()  # the queue drains and its files are deleted
        assert node.wait_idle(60)
        time.sleep(1.1)
        assert store(node.port, make_series(1, seed=30)) == [0]
    finally:
        node.stop(drain=False)
        destination.stop()
        log.close()


def test_free_space_watermark(start_node):
    node = start_node(limits=Limits(min_free_gb=1e9))  # no disk has an exabyte free
    assert store(node.port, make_series(1, seed=8)) == [STATUS_OUT_OF_RESOURCES]
    assert "disk nearly full" in node.log.text and "--min-free-gb" in node.log.text
    node.storage_guard.min_free_bytes = 0  # as if the operator freed space
    assert store(node.port, make_series(1, seed=9)) == [0]
    assert echo_ok(node.port)


def test_storage_is_private_to_the_node_user(start_node, tmp_path):
    node = start_node()
    store(node.port, make_series(2, seed=11), release=False)
    segs = _wait_for_a_seg(tmp_path)
    assert stat.S_IMODE(segs.stat().st_mode) == 0o600
    # job.json is written by io.atomic_write (mode=0o600 from the queue), the instances by the queue.
    job_files = [segs.parent / "job.json", *sorted((segs.parent / "instances").glob("*.dcm"))]
    assert len(job_files) == 2
    for path in job_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    root = node.queue.root
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    files = _stored_files(node)
    assert len(files) == 2
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, path.parent


def _wait_for_a_seg(tmp_path: Path) -> Path:
    """A series segmented by a node whose destination is down: its SEG (and job.json) stay in jobs/."""
    redactor = PatientRedactor()
    node = DicomNode(
        "LITENEXT",
        free_port(),
        parse_destination(f"NOBODY@127.0.0.1:{free_port()}"),
        tmp_path / "seg-storage",
        threshold_segmenter,
        host="127.0.0.1",
        redactor=redactor,
        allow=LOCAL_RULES,
        warm_up=False,
        series_timeout=0.5,
    )
    node.start()
    try:
        assert store(node.port, make_series(1, seed=18)) == [0]
        deadline = time.monotonic() + 30
        while not node.queue.segmented() and time.monotonic() < deadline:  # set once the SEG is final
            time.sleep(0.1)
        (job,) = node.queue.segmented()
        return job.seg_path
    finally:
        node.stop(drain=False)


def test_failed_jobs_past_retention_are_deleted_at_start(start_node, tmp_path):
    storage = tmp_path / "kept"
    for name, age_days in (("old", 10), ("recent", 1)):
        folder = storage / "failed" / name
        folder.mkdir(parents=True)
        (folder / "job.json").write_text("{}")
        then = time.time() - age_days * 86400
        os.utime(folder, (then, then))
    node = start_node(storage=storage, limits=Limits(keep_failed_days=5))
    assert sorted(p.name for p in (storage / "failed").iterdir()) == ["recent"]
    assert "Deleted 1 failed job(s) older than 5 days" in node.log.text


# -- logging ----------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # pydicom, about the test's own UID
def test_control_characters_in_logged_values_are_escaped(start_node):
    node = start_node()
    plan = Dataset()
    plan.file_meta = FileMetaDataset()
    plan.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    plan.SOPClassUID = RTPlanStorage
    plan.SOPInstanceUID = "1.2.3\n2026-01-01 ERROR forged line\r\x1b[31m"
    plan.StudyInstanceUID, plan.SeriesInstanceUID = generate_uid(), generate_uid()
    assert store(node.port, [plan]) == [0x0122]
    assert "Refused instance 1.2.3\\n2026-01-01 ERROR forged line\\r\\x1b[31m from TESTSCU" in node.log.text
    assert not any(line.startswith("2026-01-01") for line in node.log.text.splitlines())
    assert "\x1b" not in node.log.text
    assert echo_ok(node.port)


# -- TLS on the node's port -------------------------------------------------------------------------


def test_tls_port_requires_a_client_certificate_and_refuses_plain_tcp(start_node, tmp_path):
    import ssl

    pki = TestPKI(tmp_path / "pki")
    server, client = pki.issue("node"), pki.issue("client")
    node = start_node(tls_cert=server.cert, tls_key=server.key, tls_ca=pki.ca)

    def client_tls(with_cert: bool):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=str(pki.ca))
        if with_cert:
            context.load_cert_chain(str(client.cert), str(client.key))
        return (context, "127.0.0.1")

    # A peer that connects and never speaks does not hold up the others (handshake on its own thread).
    with socket.create_connection(("127.0.0.1", node.port)):
        assert echo_ok(node.port, tls=client_tls(True))
    assert not echo_ok(node.port)  # plain TCP on the TLS port
    assert not echo_ok(node.port, tls=client_tls(False))  # TLS without a client certificate
    stranger = TestPKI(tmp_path / "other-pki", name="another CA").issue("client")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(pki.ca))
    context.load_cert_chain(str(stranger.cert), str(stranger.key))
    assert not echo_ok(node.port, tls=(context, "127.0.0.1"))  # a certificate from another CA
    assert "closed before any association request" in node.log.text
    assert store(node.port, make_series(1, seed=12), tls=client_tls(True)) == [0]
    assert echo_ok(node.port, tls=client_tls(True))


def test_tls_options_are_checked(tmp_path):
    def make(**kwargs):
        return DicomNode("X", 1, parse_destination("A@h:1"), tmp_path / "s", threshold_segmenter, **kwargs)

    with pytest.raises(ValueError, match="--tls-cert and --tls-key go together"):
        make(tls_cert=tmp_path / "a.pem")
    with pytest.raises(ValueError, match="--tls-ca needs --tls-cert"):
        make(tls_ca=tmp_path / "ca.pem")
    with pytest.raises(ValueError, match=f"--tls-cert {tmp_path / 'a.pem'}: no such file"):
        make(tls_cert=tmp_path / "a.pem", tls_key=tmp_path / "a.key")


# -- health and metrics -----------------------------------------------------------------------------


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _metric(text: str, name: str) -> float:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, (name, text)
    return values[0]


def test_healthz_and_metrics(start_node, destination):
    # The second series below must still be incoming when /metrics is read: a few seconds of timeout.
    node = start_node(health_port=0, series_timeout=3.0)
    base = f"http://127.0.0.1:{node.health_server.port}"
    assert node.health_server.host == "127.0.0.1"
    assert _get(base + "/healthz") == (200, "ok\n")
    before = time.time()
    series = make_series(3, seed=13)
    assert store(node.port, series) == [0, 0, 0]
    assert len(destination.wait_for(1, timeout=60)) == 1
    assert node.wait_idle(10)
    plan = make_series(1, seed=14)[0]
    plan.SOPClassUID = RTPlanStorage
    assert store(node.port, [plan]) == [0x0122]
    store(node.port, make_series(2, seed=15), calling="TESTSCU")  # one series incoming ...
    code, text = _get(base + "/metrics")
    assert code == 200
    assert _metric(text, "litenext_node_received_instances_total") == 5
    assert _metric(text, "litenext_node_refused_instances_total") == 1
    assert _metric(text, "litenext_node_sent_segs_total") == 1
    assert _metric(text, "litenext_node_segmented_series_total") >= 1
    assert _metric(text, "litenext_node_failed_jobs_total") == 0
    assert before <= _metric(text, "litenext_node_last_success_timestamp") <= time.time()
    assert _metric(text, "litenext_node_up") == 1
    depth = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("litenext_node_queue_depth{")
    }
    assert set(depth) >= {"incoming", "pending", "segmented", "sent", "failed"}
    assert depth["sent"] == 1  # the first series, kept in sent/ for late instances
    assert sum(v for k, v in depth.items() if k != "sent") == 1  # ... or sealed and segmented by now
    assert _get(base + "/nothing")[0] == 404


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the point of the test
def test_healthz_is_503_when_a_worker_died(start_node):
    def fatal(job):
        raise SystemExit("the segmentation thread died")  # not an Exception: the thread ends

    node = start_node(health_port=0, series_timeout=0.5)
    node._segment = fatal  # the thread's step (the segmentation itself runs in the worker process)
    store(node.port, make_series(1, seed=16))
    deadline = time.monotonic() + 30
    while node.health()[0] and time.monotonic() < deadline:
        time.sleep(0.1)
    code, body = _get(f"http://127.0.0.1:{node.health_server.port}/healthz")
    assert (code, body) == (503, "worker thread(s) stopped: litenext-segment\n")
    assert "litenext_node_up 0.0" in _get(f"http://127.0.0.1:{node.health_server.port}/metrics")[1]
    assert echo_ok(node.port)  # the DICOM side still answers; /healthz is what tells


def test_metrics_queue_depth_counts_job_files(tmp_path):
    from litenext_monai.dicom_node import queue_counts

    for state, n in (("pending", 2), ("segmented", 1), ("sending", 1)):
        for i in range(n):
            folder = tmp_path / "jobs" / f"{state}-{i}"
            folder.mkdir(parents=True)
            (folder / "job.json").write_text(json.dumps({"state": state}))
    (tmp_path / "incoming" / "1.2.3").mkdir(parents=True)
    (tmp_path / "failed" / "x").mkdir(parents=True)
    for name in ("1.2.4", "1.2.5"):  # delivered series that sent/ remembers
        (tmp_path / "sent" / name).mkdir(parents=True)
    assert queue_counts(tmp_path) == {
        "incoming": 1,
        "pending": 2,
        "segmented": 1,
        "sending": 1,
        "sent": 2,
        "failed": 1,
    }


def test_allow_rules():
    from ipaddress import ip_network

    from litenext_monai.dicom_node import AccessPolicy, parse_allow

    assert parse_allow("PACS@10.1.2.3").networks == (ip_network("10.1.2.3/32"),)
    assert parse_allow("*@10.1.0.0/16").networks == (ip_network("10.1.0.0/16"),)
    assert ip_network("127.0.0.1/32") in parse_allow("PACS@localhost").networks  # resolved now
    assert parse_allow("PACS@[::1]").networks == (ip_network("::1/128"),)
    for bad in ("PACS", "@10.0.0.1", "PACS@", "A" * 17 + "@10.0.0.1", " PACS@10.0.0.1x"):
        with pytest.raises(ValueError):
            parse_allow(bad)
    policy = AccessPolicy("LITENEXT", ["PACS@10.1.0.0/16", "*@192.168.7.7"])
    assert policy.check("10.1.200.3", "PACS", "LITENEXT") is None
    assert policy.check("::ffff:10.1.200.3", "PACS", "LITENEXT") is None  # dual-stack listener
    assert policy.check("192.168.7.7", "ANYONE", "LITENEXT") is None
    assert policy.check("10.2.0.1", "PACS", "LITENEXT") == (0x03, "address not allowed for this AE title")
    assert policy.check("10.1.0.1", "OTHER", "LITENEXT") == (0x03, "address not allowed for this AE title")
    strict = AccessPolicy("LITENEXT", ["PACS@10.1.0.0/16"])
    assert strict.check("10.1.0.1", "OTHER", "LITENEXT") == (0x03, "calling AE title not allowed")
    assert policy.check("10.1.0.1", "PACS", "SOMEONE")[0] == 0x07


def test_pdu_size_is_negotiated_and_a_longer_pdu_aborts(start_node, monkeypatch):
    import pynetdicom.dimse

    node = start_node(limits=Limits(max_pdu=4096))
    assoc = associate(node.port, [(MRImageStorage, [ExplicitVRLittleEndian])])
    assert assoc.acceptor.maximum_length == 4096  # what the node told the requestor
    assoc.release()
    # A sender that ignores it: one PDU for the whole 8 KiB data set.
    monkeypatch.setattr(pynetdicom.dimse.DIMSEServiceProvider, "maximum_pdu_size", property(lambda self: 0))
    assert store(node.port, make_series(1, seed=17)) == [None]
    monkeypatch.undo()
    assert "exceeds --max-pdu 4096" in node.log.text
    assert _stored_files(node) == []
    assert echo_ok(node.port)


def test_a_stalled_peer_is_disconnected_and_frees_its_association(start_node):
    node = start_node(limits=Limits(max_associations=1), network_timeout=1.0)
    with socket.create_connection(("127.0.0.1", node.port)) as stalled:
        stalled.sendall(b"\x01\x00\x00")  # the first bytes of an A-ASSOCIATE-RQ, then nothing
        deadline = time.monotonic() + 15
        while not echo_ok(node.port) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert echo_ok(node.port)  # the only association slot is free again
