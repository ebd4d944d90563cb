"""scripts/dicom_node.py against a real Orthanc on loopback, with a real (untrained) checkpoint.

Orthanc holds the series and is both the sender (``POST /modalities/litenext/store``) and the
destination of the SEGs; every SEG that comes back is checked with dciodvfy. Without Orthanc or
dciodvfy these tests skip, and with REQUIRE_INTEGRATION=1 they fail.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pydicom
import pytest
import torch
from pydicom.uid import RTPlanStorage

from litenext_monai.model.card import write_inference_settings
from litenext_monai.networks import LiteNeXt
from tests.dicom_node.helpers import (
    PATIENT_ID,
    PATIENT_NAME,
    NodeProcess,
    Orthanc,
    dciodvfy_errors,
    dciodvfy_executable,
    echo,
    free_port,
    make_series,
    orthanc_executable,
    store_scu,
    write_series,
)

pytestmark = pytest.mark.integration

SEG_TIMEOUT = 90.0  # generous: the machine running the suite may be busy


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised 1-channel LiteNeXt with its model.json (64×64, MR)."""
    orthanc_executable()  # skip (or fail) before anything is built
    dciodvfy_executable()
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    network = LiteNeXt(spatial_dims=2, in_channels=1, out_channels=1, base_channels=8)
    path = folder / "model.pt"
    torch.save(network.state_dict(), path)
    write_inference_settings(
        path,
        {
            "network_def": {
                "_target_": "litenext_monai.networks.LiteNeXt",
                "spatial_dims": 2,
                "in_channels": 1,
                "out_channels": 1,
                "base_channels": 8,
            },
            "in_channels": 1,
            "out_channels": 1,
            "image_size": [64, 64],
            "modality": "mr",
            "threshold": 0.5,
        },
    )
    return path


@pytest.fixture(scope="module")
def pacs(tmp_path_factory, checkpoint):
    """One Orthanc and one node (quiet time 3 s) shared by the tests below."""
    folder = tmp_path_factory.mktemp("pacs")
    node_port = free_port()
    orthanc = Orthanc(folder / "orthanc", node_port)
    node = NodeProcess(
        folder / "storage",
        checkpoint,
        orthanc.destination,
        port=node_port,
        series_timeout=3.0,
        log=folder / "node.log",
    )
    try:
        node.wait_ready()
        yield orthanc, node, folder
    finally:
        node.kill()
        orthanc.stop()


def _upload(orthanc: Orthanc, folder: Path, n_slices: int = 3, seed: int = 0):
    series = make_series(n_slices, seed=seed)
    return series, orthanc.upload(write_series(folder / series[0].SeriesInstanceUID, series))


def _check_seg_in_orthanc(orthanc: Orthanc, seg_series: dict, source: list, folder: Path) -> None:
    (instance_id,) = seg_series["Instances"]
    path = orthanc.download(instance_id, folder / f"{instance_id}.dcm")
    assert dciodvfy_errors(path) == []
    seg = pydicom.dcmread(path)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.PatientID == source[0].PatientID  # kept in the SEG, never in the log
    referenced = {
        i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == {d.SOPInstanceUID for d in source}


def test_orthanc_sends_a_series_and_stores_the_seg(pacs):
    orthanc, node, folder = pacs
    series, series_id = _upload(orthanc, folder / "upload", seed=1)
    orthanc.send_to_node(series_id)
    found = orthanc.wait_for_segs([series[0].StudyInstanceUID], SEG_TIMEOUT)[series[0].StudyInstanceUID]
    assert len(found) == 1, node.log_text()
    _check_seg_in_orthanc(orthanc, found[0], series, folder)


def test_three_series_sent_concurrently_give_three_segs(pacs):
    orthanc, node, folder = pacs
    uploads = [_upload(orthanc, folder / "upload", n_slices=2, seed=10 + i) for i in range(3)]
    for _, series_id in uploads:
        orthanc.send_to_node(series_id)
    studies = [series[0].StudyInstanceUID for series, _ in uploads]
    found = orthanc.wait_for_segs(studies, SEG_TIMEOUT)
    assert [len(found[s]) for s in studies] == [1, 1, 1], node.log_text()
    for (series, _), study in zip(uploads, studies):
        _check_seg_in_orthanc(orthanc, found[study][0], series, folder)


def test_aborted_association_then_the_node_still_serves(pacs):
    orthanc, node, folder = pacs
    partial = make_series(4, seed=20)
    assert store_scu(partial[:2], node.port, release=False) == [0, 0]
    assert echo(node.port) == 0x0000
    series, series_id = _upload(orthanc, folder / "upload", seed=21)
    orthanc.send_to_node(series_id)
    studies = [series[0].StudyInstanceUID, partial[0].StudyInstanceUID]
    found = orthanc.wait_for_segs(studies, SEG_TIMEOUT)
    assert len(found[studies[0]]) == 1, node.log_text()
    _check_seg_in_orthanc(orthanc, found[studies[0]][0], series, folder)
    # The two instances acknowledged before the abort are not lost: the quiet time seals them.
    assert len(found[studies[1]]) == 1, node.log_text()
    _check_seg_in_orthanc(orthanc, found[studies[1]][0], partial[:2], folder)


def test_non_image_and_corrupt_instances_are_refused(pacs):
    orthanc, node, folder = pacs
    plan = make_series(1, seed=30)[0]
    plan.SOPClassUID = plan.file_meta.MediaStorageSOPClassUID = RTPlanStorage
    assert store_scu([plan], node.port) == [0x0122]
    corrupt = make_series(1, seed=31)[0]
    corrupt.PixelData = corrupt.PixelData[:-100]
    assert store_scu([corrupt], node.port) == [0xC001]
    assert echo(node.port) == 0x0000
    log = node.log_text()
    assert f"Refused instance {plan.SOPInstanceUID} from TESTSCU: RT Plan Storage is not an image" in log
    assert f"Refused instance {corrupt.SOPInstanceUID} from TESTSCU: Pixel Data holds" in log


def test_the_log_has_no_patient_name_or_id(pacs):
    """Runs last in this module: the node's whole log so far, after every test above."""
    _, node, _ = pacs
    log = node.log_text()
    assert "SEG stored by ORTHANC" in log  # the log is the real one
    for secret in (PATIENT_NAME, PATIENT_ID, *PATIENT_NAME.split("^")):
        assert secret not in log


def _jobs(storage: Path) -> dict[str, str]:
    return {
        json.loads((p / "job.json").read_text())["series_uid"]: json.loads((p / "job.json").read_text())[
            "state"
        ]
        for p in (storage / "jobs").iterdir()
        if (p / "job.json").is_file()
    }


def test_kill_9_then_restart_completes_the_queue_and_sigterm_drains(tmp_path, checkpoint):
    """kill -9 with a SEG waiting for delivery and a series still incoming; a restart delivers both.

    The restarted node then gets SIGTERM with another unsealed series and must deliver it before
    exiting 0.
    """
    storage = tmp_path / "storage"
    node_port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", node_port)
    unreachable = f"NOBODY@127.0.0.1:{free_port()}"
    first = NodeProcess(
        storage, checkpoint, unreachable, port=node_port, series_timeout=3, log=tmp_path / "1.log"
    )
    second = None
    try:
        first.wait_ready()
        waiting, series_id = _upload(orthanc, tmp_path / "upload", seed=40)
        orthanc.send_to_node(series_id)
        deadline = time.monotonic() + SEG_TIMEOUT
        while _jobs(storage).get(waiting[0].SeriesInstanceUID) != "segmented" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _jobs(storage) == {waiting[0].SeriesInstanceUID: "segmented"}, first.log_text()
        incoming = make_series(2, seed=41)
        assert store_scu(incoming, node_port, release=False) == [0, 0]
        first.process.send_signal(signal.SIGKILL)  # before the series timeout: still incoming
        assert first.wait(10) == -signal.SIGKILL

        second = NodeProcess(
            storage, checkpoint, orthanc.destination, series_timeout=3, log=tmp_path / "2.log"
        )
        second.wait_ready()
        studies = [waiting[0].StudyInstanceUID, incoming[0].StudyInstanceUID]
        found = orthanc.wait_for_segs(studies, SEG_TIMEOUT)
        assert [len(found[s]) for s in studies] == [1, 1], second.log_text()
        _check_seg_in_orthanc(orthanc, found[studies[0]][0], waiting, tmp_path)
        _check_seg_in_orthanc(orthanc, found[studies[1]][0], incoming, tmp_path)
        assert "Resuming: 0 series to segment, 1 SEGs to send, 1 series still receiving" in second.log_text()

        last = make_series(2, seed=42)
        assert store_scu(last, second.port, release=False) == [0, 0]  # unsealed for 3 s
        second.process.send_signal(signal.SIGTERM)
        assert second.wait(SEG_TIMEOUT) == 0, second.log_text()
        found = orthanc.seg_series(last[0].StudyInstanceUID)
        assert len(found) == 1, second.log_text()
        _check_seg_in_orthanc(orthanc, found[0], last, tmp_path)
        assert "SIGTERM: draining" in second.log_text()
        assert "Stopped: 3 SEGs sent, 0 series failed, 0 jobs left" in second.log_text()
        assert not any((storage / "jobs").iterdir()) and not any((storage / "incoming").iterdir())
    finally:
        for process in (first, second):
            if process is not None:
                process.kill()
        orthanc.stop()
    assert os.listdir(storage / "tmp") == []
