"""Access control and DICOM TLS between the node and a real Orthanc on loopback.

Orthanc is the sender (``POST /modalities/litenext/store``) and the destination of the SEGs. The
node runs in-process with the threshold segmenter (the real model runs in test_node_orthanc.py).
Without Orthanc these tests skip; with REQUIRE_INTEGRATION=1 they fail.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pydicom
import pytest

from litenext_monai.dicom_node import DicomNode, PatientRedactor, parse_destination
from tests.dicom_node.certs import TestPKI
from tests.dicom_node.helpers import (
    NodeLog,
    Orthanc,
    echo,
    free_port,
    make_series,
    orthanc_executable,
    threshold_segmenter,
    write_series,
)

pytestmark = pytest.mark.integration

SEG_TIMEOUT = 60.0


def _node(storage: Path, port: int, destination, **kwargs) -> tuple[DicomNode, NodeLog]:
    redactor = PatientRedactor()
    log = NodeLog(redactor)
    node = DicomNode(
        "LITENEXT",
        port,
        destination,
        storage,
        threshold_segmenter,
        host="127.0.0.1",
        redactor=redactor,
        warm_up=False,
        series_timeout=2.0,  # Orthanc sends a series without pauses
        **kwargs,
    )
    node.start()
    return node, log


def test_orthanc_with_an_unlisted_ae_title_is_refused(tmp_path):
    orthanc_executable()
    port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", port)
    node, log = _node(
        tmp_path / "storage",
        port,
        parse_destination(orthanc.destination),
        allow=["PACS@127.0.0.1", "ECHOSCU@127.0.0.1"],
    )
    try:
        series = make_series(2, seed=1)
        series_id = orthanc.upload(write_series(tmp_path / "upload", series))
        with pytest.raises(urllib.error.HTTPError):
            orthanc.send_to_node(series_id, synchronous=True)
        assert "calling 'ORTHANC' refused: calling AE title not allowed" in log.text
        assert node.queue.incoming_series() == 0 and len(node.queue) == 0
        assert echo(node.port, timeout=5) == 0x0000
    finally:
        node.stop(drain=False)
        log.close()
        orthanc.stop()


def test_tls_both_ways_with_orthanc_and_plain_tcp_refused(tmp_path):
    orthanc_executable()
    pki = TestPKI(tmp_path / "pki")
    node_pair, orthanc_pair = pki.issue("node"), pki.issue("orthanc")
    port = free_port()
    orthanc = Orthanc(
        tmp_path / "orthanc",
        port,
        use_tls_to_node=True,
        extra_config={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(orthanc_pair.cert),
            "DicomTlsPrivateKey": str(orthanc_pair.key),
            "DicomTlsTrustedCertificates": str(pki.ca),
            "DicomTlsRemoteCertificateRequired": True,
        },
    )
    destination = parse_destination(
        orthanc.destination, tls_ca=str(pki.ca), tls_cert=str(node_pair.cert), tls_key=str(node_pair.key)
    )
    node, log = _node(
        tmp_path / "storage",
        port,
        destination,
        allow=["ORTHANC@127.0.0.1", "ECHOSCU@127.0.0.1"],
        tls_cert=node_pair.cert,
        tls_key=node_pair.key,
        tls_ca=pki.ca,
    )
    try:
        assert "(TLS, client certificates required)" in log.text
        # Plain TCP is refused by both TLS ports: whatever arrives below went over TLS.
        assert echo(node.port, timeout=5) is None
        assert echo(orthanc.dicom_port, called=orthanc.aet, timeout=5) is None
        series = make_series(3, seed=2)
        series_id = orthanc.upload(write_series(tmp_path / "upload", series))
        orthanc.send_to_node(series_id, synchronous=True)  # Orthanc -> node over TLS
        study = series[0].StudyInstanceUID
        found = orthanc.wait_for_segs([study], SEG_TIMEOUT)[study]  # node -> Orthanc over TLS
        assert len(found) == 1, log.text
        (instance_id,) = found[0]["Instances"]
        seg = pydicom.dcmread(orthanc.download(instance_id, tmp_path / "seg.dcm"))
        referenced = {
            i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
        }
        assert referenced == {d.SOPInstanceUID for d in series}
        assert "calling 'ORTHANC' accepted" in log.text
        assert "SEG stored by ORTHANC" in log.text
        assert "closed before any association request" in log.text  # the plain-TCP echo
    finally:
        node.stop(drain=False)
        log.close()
        orthanc.stop()
