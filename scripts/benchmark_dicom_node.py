"""Latency of the DICOM node: C-STORE of a 4-slice 256×256 series until its SEG reaches the destination.

Usage::

    python scripts/benchmark_dicom_node.py [--checkpoint models/model.pt] [--runs 5] [--slices 4] [--size 256]

Starts ``scripts/dicom_node.py`` as a subprocess (as it runs in production), a pynetdicom Storage
SCP as its destination, then sends ``--runs`` series one after another. For each series the clock
starts when the sender opens the association and stops when the destination receives the SEG; it
includes the node's series timeout (``--series-timeout``, 1 s here), the quiet time after which a
series counts as complete.
The node warms up before it listens (one synthetic segmentation), so the first series is not
slower than the others.
Without ``--checkpoint`` a randomly initialised LiteNeXt (paper width, 1 channel, 256×256, MR) is
used: latency does not depend on the weights.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE, evt
from pynetdicom.sop_class import SegmentationStorage, Verification

from litenext_monai.dicom_node import synthetic_mr_series

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 10.0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_series(n_slices: int, size: int, seed: int) -> list[Dataset]:
    """An axial MR series (16-bit, 1 mm spacing) with a bright disc in noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
    images = [(rng.integers(0, 300, (size, size)) + 900 * disc).astype(np.uint16) for _ in range(n_slices)]
    return synthetic_mr_series(images, "Bench^Mark", "BENCH1")


def write_random_checkpoint(folder: Path, size: int) -> Path:
    import torch

    from litenext_monai.model.card import write_inference_settings
    from litenext_monai.networks import LiteNeXt

    network = LiteNeXt(spatial_dims=2, in_channels=1, out_channels=1)
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
            },
            "in_channels": 1,
            "out_channels": 1,
            "image_size": [size, size],
            "modality": "mr",
            "threshold": 0.5,
        },
    )
    return path


class Destination:
    """A Storage SCP that records when each SEG arrives, by the Series Instance UID it references."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.arrivals: dict[str, float] = {}
        self._arrived = threading.Condition()
        ae = AE(ae_title="BENCHDEST")
        ae.add_supported_context(SegmentationStorage)
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )

    def _on_store(self, event) -> int:
        now = time.perf_counter()
        series = str(event.dataset.ReferencedSeriesSequence[0].SeriesInstanceUID)
        with self._arrived:
            self.arrivals[series] = now
            self._arrived.notify_all()
        return 0x0000

    def wait(self, series_uid: str, timeout: float) -> float | None:
        with self._arrived:
            self._arrived.wait_for(lambda: series_uid in self.arrivals, timeout)
            return self.arrivals.get(series_uid)


def _echo(port: int) -> bool:
    ae = AE(ae_title="BENCHSCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.connection_timeout = 2
    assoc = ae.associate("127.0.0.1", port, ae_title="LITENEXT")
    if not assoc.is_established:
        return False
    ok = getattr(assoc.send_c_echo(), "Status", None) == 0
    assoc.release()
    return ok


def send_series(datasets: list[Dataset], port: int) -> float:
    """C-STORE the series on one association; returns the time the association was requested."""
    ae = AE(ae_title="BENCHSCU")
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    start = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title="LITENEXT")
    if not assoc.is_established:
        raise RuntimeError("the node refused the association")
    for ds in datasets:
        status = assoc.send_c_store(ds)
        if getattr(status, "Status", None) != 0:
            raise RuntimeError(f"C-STORE failed: {status}")
    assoc.release()
    return start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="model.pt with model.json (default: a random LiteNeXt)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for each SEG")
    parser.add_argument(
        "--series-timeout",
        type=float,
        default=1.0,
        help="the node's --series-timeout (default 1 s): a series is segmented only after this much "
        "quiet, so the latency includes it",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="litenext-node-bench-") as tmp:
        tmp = Path(tmp)
        checkpoint = Path(args.checkpoint) if args.checkpoint else write_random_checkpoint(tmp, args.size)
        destination = Destination()
        port = _free_port()
        log = open(tmp / "node.log", "wb")  # noqa: SIM115 - closed below
        node = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "scripts" / "dicom_node.py"),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--destination",
                f"BENCHDEST@127.0.0.1:{destination.port}",
                "--checkpoint",
                str(checkpoint),
                "--storage",
                str(tmp / "storage"),
                "--series-timeout",
                str(args.series_timeout),
                "--allow",  # the node refuses every association without a rule
                "BENCHSCU@127.0.0.1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        started = time.perf_counter()
        latencies: list[float] = []
        try:
            while not _echo(port):
                if node.poll() is not None or time.perf_counter() - started > 300:
                    raise RuntimeError(f"the node did not start:\n{(tmp / 'node.log').read_text()}")
                time.sleep(0.2)
            print(f"node ready after {time.perf_counter() - started:.1f} s (imports, model loading, warm-up)")
            for run in range(args.runs):
                series = make_series(args.slices, args.size, seed=run)
                sent = send_series(series, port)
                arrived = destination.wait(series[0].SeriesInstanceUID, args.timeout)
                if arrived is None:
                    raise RuntimeError(f"no SEG within {args.timeout} s:\n{(tmp / 'node.log').read_text()}")
                latencies.append(arrived - sent)
                print(f"run {run + 1}: {latencies[-1]:.2f} s")
        finally:
            node.terminate()
            node.wait(120)
            log.close()
            destination.server.shutdown()
    print(
        f"C-STORE of a {args.slices}-slice {args.size}x{args.size} series -> SEG at the destination: "
        f"median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s over {len(latencies)} runs; "
        f"target <= {TARGET_SECONDS:g} s ({os.cpu_count()} CPUs)"
    )
    return 0 if max(latencies) <= TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
