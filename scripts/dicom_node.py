"""A DICOM node that segments every image series it receives and sends the SEG on.

Usage::

    python scripts/dicom_node.py --ae-title LITENEXT --port 11112 \\
        --destination ORTHANC@pacs.example.org:4242 --checkpoint models/model.pt \\
        --storage /var/lib/litenext-node [--quiet-seconds 60] [--host 0.0.0.0] [--device cpu]

The node is a Storage SCP (with C-ECHO) for the usual image storage classes; other objects (RT
Plan, structured reports, ...) are refused with status 0x0122. Received instances are grouped by
series; when the sender releases the association, or when a series has received nothing for
--quiet-seconds, the series is segmented and its DICOM SEG is C-STOREd to --destination.

Everything received is queued on disk under --storage before it is acknowledged: a node that is
killed resumes its queue at the next start. SIGTERM (or Ctrl-C) stops listening, segments and sends
what is queued, then exits; a second signal exits after the current item, leaving the rest queued.

Exit status: 0 after a clean stop, 2 on bad arguments, an unusable checkpoint or a port in use.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from litenext_monai.dicom_node import (
    DicomNode,
    checkpoint_segmenter,
    configure_node_logging,
    parse_destination,
)

__all__ = ["build_parser", "main"]

logger = logging.getLogger("litenext_monai.dicom_node")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--ae-title", default="LITENEXT", help="the node's AE title (default LITENEXT)")
    parser.add_argument("--port", type=int, default=11112, help="TCP port to listen on (default 11112)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    parser.add_argument("--destination", required=True, help="where SEGs go: AET@HOST:PORT")
    parser.add_argument(
        "--checkpoint", required=True, help="model.pt with model.json beside it, or an MLflow model URI"
    )
    parser.add_argument("--storage", required=True, help="folder of the on-disk job queue")
    parser.add_argument(
        "--quiet-seconds",
        type=float,
        default=60.0,
        help="segment a series after this long without new instances, even before its association "
        "is released (default 60)",
    )
    parser.add_argument("--device", default="cpu", help="torch device for inference (default cpu)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    redactor = configure_node_logging(getattr(logging, args.log_level))
    try:
        destination = parse_destination(args.destination)
    except ValueError as err:
        logger.error("%s", err)
        return 2
    if not 0 < args.port < 65536 or len(args.ae_title.strip()) == 0 or len(args.ae_title) > 16:
        logger.error("--port must be 1-65535 and --ae-title 1-16 characters")
        return 2
    if args.quiet_seconds <= 0:
        logger.error("--quiet-seconds must be positive, got %g", args.quiet_seconds)
        return 2
    try:
        segmenter = checkpoint_segmenter(args.checkpoint, device=args.device)
    except Exception as err:  # noqa: BLE001 - any loading failure makes the node unusable
        logger.error("cannot load checkpoint %s: %s: %s", args.checkpoint, type(err).__name__, err)
        return 2
    node = DicomNode(
        args.ae_title,
        args.port,
        destination,
        args.storage,
        segmenter,
        host=args.host,
        quiet_seconds=args.quiet_seconds,
        redactor=redactor,
    )
    stop = threading.Event()

    def on_signal(signum: int, _frame) -> None:
        if stop.is_set():
            logger.warning("%s again: stopping after the current item", signal.Signals(signum).name)
            node.halt()
        else:
            logger.info("%s: draining the queue, then stopping", signal.Signals(signum).name)
            stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        node.start()
    except OSError as err:
        logger.error("cannot listen on %s:%d: %s", args.host, args.port, err)
        node.stop(drain=False)
        return 2
    while not stop.wait(1.0):
        pass
    node.stop(drain=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
