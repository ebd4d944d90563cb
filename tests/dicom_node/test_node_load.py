"""Load: 20 series from 4 concurrent senders while the destination Orthanc goes down and up twice.

The node runs in-process with a real (tiny, random-weight) LiteNeXt checkpoint in its worker
process; the destination is a real Orthanc whose REST API counts the SEGs. Every series must get
exactly one complete SEG (it references every instance sent), nothing may be lost or left in
failed/, and the node's memory must stay bounded. The RSS figures are printed (run with ``-s``)
and written to ``$LITENEXT_LOAD_REPORT`` when that is set.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import pydicom
import pytest

from litenext_monai.dicom_node import DicomNode, checkpoint_worker, parse_destination
from tests.dicom_node.helpers import (
    Orthanc,
    dciodvfy_errors,
    dciodvfy_executable,
    echo,
    free_port,
    make_series,
    orthanc_executable,
    store_scu,
)
from tests.hospital_helpers import tiny_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SENDERS = 4
SERIES_PER_SENDER = 5
SLICES = 3
#: Allowed growth of the node's resident memory from the first to the last quarter of the run.
RSS_GROWTH_LIMIT_MB = 64.0


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


class _RssSampler(threading.Thread):
    """Samples the RSS of this process (the listener) and of the node's worker every 0.2 s."""

    def __init__(self, node: DicomNode) -> None:
        super().__init__(daemon=True)
        self.node, self.samples = node, []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            worker = self.node.worker.pid
            try:
                worker_mb = _rss_mb(worker) if worker else 0.0
            except OSError:  # the worker is being restarted
                worker_mb = 0.0
            self.samples.append((time.monotonic(), _rss_mb(os.getpid()), worker_mb))


class _Count(logging.Handler):
    """Counts the node's log records that contain ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.WARNING)
        self.text, self.count = text, 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += self.text in record.getMessage()


def test_twenty_series_four_senders_destination_restarted_twice(tmp_path):
    orthanc_executable()
    dciodvfy_executable()
    checkpoint = tiny_checkpoint(tmp_path / "model", image_size=(32, 32))
    node_port = free_port()
    orthanc = Orthanc(tmp_path / "orthanc", node_port)
    node = DicomNode(
        "LITENEXT",
        node_port,
        parse_destination(orthanc.destination),
        tmp_path / "storage",
        checkpoint_worker(str(checkpoint)),
        host="127.0.0.1",
        series_timeout=4.0,  # well above the gap between one-instance associations on a loaded machine
        retry_max_seconds=2.0,
        network_timeout=5.0,
        allow=["*@127.0.0.1"],  # the node refuses every association without a rule
    )
    failures = _Count("not delivered")
    logging.getLogger("litenext_monai.dicom_node").addHandler(failures)
    node.start()
    sampler = _RssSampler(node)
    sampler.start()
    series = [make_series(SLICES, size=32, seed=100 + k) for k in range(SENDERS * SERIES_PER_SENDER)]
    errors: list[BaseException] = []

    def sender(index: int) -> None:
        try:
            for k, datasets in enumerate(series[index::SENDERS]):
                if k % 2:  # like a PACS that opens one association per instance
                    for ds in datasets:
                        assert store_scu([ds], node_port) == [0]
                else:
                    assert store_scu(datasets, node_port) == [0] * SLICES
                time.sleep(1.2)  # the series arrive over ~8 s, across both outages
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    start = time.monotonic()
    try:
        threads = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
        for thread in threads:
            thread.start()
        for _ in range(2):  # the destination goes down while SEGs are being sent, twice
            time.sleep(2.0)
            orthanc.stop()
            time.sleep(3.0)
            orthanc.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert echo(node_port) == 0x0000
        studies = [s[0].StudyInstanceUID for s in series]
        found = orthanc.wait_for_segs(studies, timeout=60)
        assert node.wait_idle(30)
        time.sleep(1.0)  # nothing more may arrive
        found = {uid: orthanc.seg_series(uid) for uid in studies}
        elapsed = time.monotonic() - start
        assert [len(found[uid]) for uid in studies] == [1] * len(studies)  # exactly one SEG series each
        for datasets in series:
            (seg_series,) = found[datasets[0].StudyInstanceUID]
            (instance,) = seg_series["Instances"]  # and one SEG instance in it
            path = orthanc.download(instance, tmp_path / f"{datasets[0].SeriesInstanceUID}.dcm")
            seg = pydicom.dcmread(path)
            referenced = {
                i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
            }
            assert referenced == {d.SOPInstanceUID for d in datasets}
        assert dciodvfy_errors(path) == []
        assert not any((node.queue.root / "failed").iterdir())
        assert len(node.queue) == 0 and node.sent == len(series)
    finally:
        logging.getLogger("litenext_monai.dicom_node").removeHandler(failures)
        sampler.done.set()
        node.stop(drain=False)
        orthanc.stop()
    samples = sampler.samples
    quarter = max(1, len(samples) // 4)
    first = max(s[1] for s in samples[:quarter])
    last = max(s[1] for s in samples[-quarter:])
    report = {
        "series": len(series),
        "senders": SENDERS,
        "destination_restarts": 2,
        "seconds": round(elapsed, 1),
        "listener_rss_mb_max": round(max(s[1] for s in samples), 1),
        "listener_rss_mb_first_quarter": round(first, 1),
        "listener_rss_mb_last_quarter": round(last, 1),
        "worker_rss_mb_max": round(max(s[2] for s in samples), 1),
        "failed_delivery_attempts": failures.count,
    }
    print("load test:", json.dumps(report))
    if os.environ.get("LITENEXT_LOAD_REPORT"):
        Path(os.environ["LITENEXT_LOAD_REPORT"]).write_text(json.dumps(report, indent=1))
    assert failures.count > 0, "the destination outages did not hit any delivery"
    assert last - first < RSS_GROWTH_LIMIT_MB, report
