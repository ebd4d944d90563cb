"""litenext-dicom-node: ``status`` and ``requeue`` on a real queue folder, and serve's argument checks."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from litenext_monai.dicom_node import JobQueue
from litenext_monai.dicom_node.cli import main
from tests.dicom_node.helpers import PATIENT_ID, PATIENT_NAME, REPO, make_series, write_series


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.fixture
def storage(tmp_path):
    """A queue with one series incoming, one pending, one segmented, one sent and one failed job.

    The failed job crashed the segmentation worker once before it failed (part B's job.json keys).
    """
    root = tmp_path / "storage"
    queue = JobQueue(root)
    series = [make_series(1, seed=seed) for seed in range(5)]
    for datasets in series:
        path = write_series(tmp_path / "files" / datasets[0].SeriesInstanceUID, datasets)[0]
        queue.store_instance(datasets[0].SeriesInstanceUID, datasets[0].SOPInstanceUID, path.read_bytes())
    queue.seal(series[1][0].SeriesInstanceUID)
    segmented = queue.seal(series[2][0].SeriesInstanceUID)
    segmented.seg_path.write_bytes(b"SEG")  # what the queue expects of a segmented job
    queue.mark_segmented(segmented)
    failed = queue.seal(series[3][0].SeriesInstanceUID)
    queue.record_segment_start(failed)
    queue.record_segment_failure(failed, "WorkerDied: the segmentation worker died", 0.0, crash=True)
    sent = queue.seal(series[4][0].SeriesInstanceUID)
    sent.seg_path.write_bytes(b"SEG")
    queue.mark_segmented(sent)
    queue.mark_sent(sent, "1.2.3.4")
    # Like highdicom quoting a value; with a line break that would forge an output line.
    queue.mark_failed(failed, f"ValueError: invalid PatientName {PATIENT_NAME!r} of {PATIENT_ID}\nFORGED")
    return root, failed.job_id, series[3][0].SeriesInstanceUID


def test_status_prints_counts_and_failed_jobs_without_patient_data(storage, capsys):
    root, failed_id, failed_series = storage
    assert main(["status", "--storage", str(root)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"storage {root}"
    counts = dict(line.split() for line in lines[1:6])
    assert counts == {"incoming": "1", "pending": "1", "segmented": "1", "sent": "1", "failed": "1"}
    assert lines[6] == "failed jobs:"
    assert lines[7].startswith(
        f"  {failed_id}  series {failed_series}  generation 1  segmentations 1 (crashes 1, transient 0)  "
        "deliveries failed 0  reason: ValueError:"
    )
    assert "[redacted]" in lines[7] and "\\nFORGED" in lines[7] and len(lines) == 8
    for secret in (PATIENT_NAME, PATIENT_ID, *PATIENT_NAME.split("^")):
        assert secret not in out

    assert main(["status", "--storage", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"incoming": 1, "pending": 1, "segmented": 1, "sent": 1, "failed": 1}
    assert [job["job_id"] for job in report["failed"]] == [failed_id]
    assert (report["failed"][0]["crashes"], report["failed"][0]["segment_attempts"]) == (1, 1)


def test_requeue_moves_a_failed_job_back_to_pending(storage, capsys):
    root, failed_id, failed_series = storage
    assert main(["requeue", failed_id, "--storage", str(root)]) == 0
    assert f"requeued {failed_id}: pending" in capsys.readouterr().out
    assert not (root / "failed" / failed_id).exists()
    # The queue's own recovery (what a node does at start) sees it as a pending job again.
    queue = JobQueue(root)
    counts = queue.recover()
    # The pending one, the requeued one, and the incoming series (sealed by the recovery).
    assert (counts["pending"], counts["segmented"]) == (3, 1)
    requeued = next(job for job in queue.pending() if job.job_id == failed_id)
    assert requeued.series_uid == failed_series and requeued.attempts == 0
    # Part B's counters start over too: a crash before the requeue must not count against it.
    assert (requeued.segment_attempts, requeued.crashes, requeued.transient_failures) == (0, 0, 0)
    assert (requeued.retry_at, requeued.first_send_at) == (0.0, 0.0)
    assert len(requeued.instance_files()) == 1


def test_requeue_and_status_errors(storage, tmp_path, capsys):
    root, failed_id, _ = storage
    assert main(["requeue", "no-such-job", "--storage", str(root)]) == 2
    assert "no failed job 'no-such-job'" in capsys.readouterr().err
    assert main(["requeue", f"../jobs/{failed_id}", "--storage", str(root)]) == 2
    assert "is not a job id" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["status", "--storage", str(tmp_path / "nothing")])
    assert exit_info.value.code == 2
    assert "is not a node's storage folder" in capsys.readouterr().err


def test_status_as_a_module_command(storage):
    root, _, _ = storage
    result = subprocess.run(
        [sys.executable, "-m", "litenext_monai.dicom_node.cli", "status", "--storage", str(root)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "  failed     1" in result.stdout


def _serve_args(tmp_path, *extra: str) -> list[str]:
    return [
        "--port",
        "11112",
        "--destination",
        "ORTHANC@127.0.0.1:4242",
        "--checkpoint",
        str(tmp_path / "model.pt"),
        "--storage",
        str(tmp_path / "storage"),
        *extra,
    ]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--allow", "ORTHANC"], "--allow 'ORTHANC' is not AET@HOST"),
        (["--allow", "ORTHANC@no-such-host.invalid"], "does not resolve"),
        (["--allow", "A@127.0.0.1", "--allow-any"], "--allow-any and --allow exclude each other"),
        (["--tls-ca", "ca.pem"], "--tls-ca needs --tls-cert"),
        (["--tls-cert", "missing.pem", "--tls-key", "missing.key"], "--tls-cert missing.pem: no such file"),
        (["--destination-tls-ca", "missing-ca.pem"], "--destination-tls-ca missing-ca.pem: no such file"),
        (["--destination-tls-cert", "c.pem"], "need --destination-tls-ca"),
        (["--max-pdu", "0"], "--max-pdu must be 4096 to 4294967295"),
        (["--max-instance-mb", "-1"], "--max-instance-mb must be positive"),
        (["--health-port", "70000"], "--health-port must be 0-65535"),
    ],
)
def test_serve_refuses_bad_settings_before_loading_the_model(tmp_path, capsys, extra, message):
    assert main(_serve_args(tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "cannot load checkpoint" not in err  # checked before the (slow) model load
    assert not (tmp_path / "storage").exists()


@pytest.mark.slow
def test_serve_end_to_end_with_health_port_and_private_storage(tmp_path):
    """The real command with a (random) LiteNeXt checkpoint: rules, /healthz, file modes, SIGTERM drain."""
    import signal
    import stat
    import urllib.request

    import torch

    from litenext_monai.model.card import write_inference_settings
    from litenext_monai.networks import LiteNeXt
    from tests.dicom_node.helpers import DestinationSCP, NodeProcess, echo, free_port, store_scu

    torch.manual_seed(0)
    checkpoint = tmp_path / "model.pt"
    torch.save(
        LiteNeXt(spatial_dims=2, in_channels=1, out_channels=1, base_channels=8).state_dict(), checkpoint
    )
    network_def = {"_target_": "litenext_monai.networks.LiteNeXt", "spatial_dims": 2}
    network_def.update(in_channels=1, out_channels=1, base_channels=8)
    write_inference_settings(
        checkpoint,
        {
            "network_def": network_def,
            "in_channels": 1,
            "out_channels": 1,
            "image_size": [64, 64],
            "modality": "mr",
            "threshold": 0.5,
        },
    )
    destination = DestinationSCP().start()
    health_port = free_port()
    storage = tmp_path / "storage"
    node = NodeProcess(
        storage,
        checkpoint,
        destination.address,
        log=tmp_path / "node.log",
        extra_args=[
            "--allow",
            "TESTSCU@127.0.0.1",
            "--allow",
            "ECHOSCU@127.0.0.1",
            "--health-port",
            str(health_port),
        ],
    )
    try:
        node.wait_ready()
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=10) as response:
            assert (response.status, response.read()) == (200, b"ok\n")
        assert store_scu(make_series(2, seed=40), node.port, release=False) == [0, 0]  # stays incoming
        assert stat.S_IMODE(storage.stat().st_mode) == 0o700
        files = list((storage / "incoming").rglob("*.dcm"))
        assert len(files) == 2
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert echo(node.port, called="SOMEONE") is None  # called AE title must be the node's
        node.process.send_signal(signal.SIGTERM)
        assert node.wait(120) == 0, node.log_text()
        assert len(destination.wait_for(1, timeout=5)) == 1  # drained: segmented and sent
        log = node.log_text()
        assert "accepts TESTSCU@127.0.0.1/32, ECHOSCU@127.0.0.1/32" in log
        assert "Health and metrics on http://127.0.0.1:" in log
        assert "refused: called AE title 'SOMEONE' is not 'LITENEXT'" in log
    finally:
        node.kill()
        destination.stop()
