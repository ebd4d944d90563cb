"""A DICOM node that segments every image series it receives and sends the SEG on.

Usage::

    python scripts/dicom_node.py --ae-title LITENEXT --port 11112 \\
        --destination ORTHANC@pacs.example.org:4242 --checkpoint models/model.pt \\
        --storage /var/lib/litenext-node [--series-timeout 60] [--host 0.0.0.0] [--device cpu]

The node is a Storage SCP (with C-ECHO) for the usual image storage classes; other objects (RT
Plan, structured reports, ...) are refused with status 0x0122. Received instances are grouped by
series; once a series has received nothing for --series-timeout seconds it is segmented in a
separate worker process (restarted if it crashes) and its DICOM SEG is C-STOREd to --destination.
Instances arriving after that give a new SEG of the whole series that supersedes the first.
See docs/dicom-node-pipeline.md.

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
from pathlib import Path

from litenext_monai.dicom_node import (
    DicomNode,
    SegmentationError,
    checkpoint_worker,
    configure_node_logging,
    parse_destination,
)
from litenext_monai.dicom_node.node import DEFAULT_SERIES_DESCRIPTION
from litenext_monai.io.dicom_seg import parse_code

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
        "--series-timeout",
        type=float,
        default=None,
        help="segment a series once it has received no instance for this many seconds (default 60)",
    )
    parser.add_argument(
        "--quiet-seconds", type=float, default=None, help="deprecated alias of --series-timeout"
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=2,
        help="a series that took the segmentation worker down this many times goes to failed/ (default 2)",
    )
    parser.add_argument(
        "--max-send-hours",
        type=float,
        default=72.0,
        help="a SEG not delivered this many hours after its first attempt goes to failed/ (default 72)",
    )
    parser.add_argument(
        "--keep-sent-hours",
        type=float,
        default=24.0,
        help="keep the instances of a delivered series this long, so that late instances get a SEG "
        "of the whole series (default 24; 0: do not keep)",
    )
    parser.add_argument(
        "--segment-timeout",
        type=float,
        default=None,
        help="kill the worker when one series takes longer than this many seconds (counts as a crash; "
        "default: no limit)",
    )
    parser.add_argument("--segment-label", default=None, help="segment label (default: the model card's)")
    parser.add_argument(
        "--segment-code",
        default=None,
        help="segmented property type as SCHEME:VALUE:MEANING, e.g. SCT:10200004:Liver (default: the "
        "model card's)",
    )
    parser.add_argument(
        "--series-description",
        default=DEFAULT_SERIES_DESCRIPTION,
        help=f"Series Description of the SEGs (default {DEFAULT_SERIES_DESCRIPTION!r})",
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
    if args.quiet_seconds is not None:
        logger.warning("--quiet-seconds is deprecated; use --series-timeout")
    series_timeout = args.series_timeout if args.series_timeout is not None else args.quiet_seconds
    series_timeout = 60.0 if series_timeout is None else series_timeout
    if series_timeout <= 0:
        flag = "--series-timeout" if args.series_timeout is not None else "--quiet-seconds"
        logger.error("%s must be positive, got %g", flag, series_timeout)
        return 2
    if args.max_attempts < 1 or args.max_send_hours <= 0 or args.keep_sent_hours < 0:
        logger.error("--max-attempts must be at least 1, --max-send-hours positive, --keep-sent-hours >= 0")
        return 2
    if args.segment_code is not None:
        try:
            parse_code(args.segment_code)
        except ValueError as err:
            logger.error("--segment-code: %s", err)
            return 2
    if ":/" not in args.checkpoint and not Path(args.checkpoint).is_file():  # not an MLflow URI
        logger.error("cannot load checkpoint %s: no such file", args.checkpoint)
        return 2
    factory = checkpoint_worker(
        args.checkpoint,
        device=args.device,
        series_description=args.series_description,
        segment_label=args.segment_label,
        segment_code=args.segment_code,
    )
    node = DicomNode(
        args.ae_title,
        args.port,
        destination,
        args.storage,
        factory,
        host=args.host,
        series_timeout=series_timeout,
        redactor=redactor,
        max_attempts=args.max_attempts,
        max_send_hours=args.max_send_hours,
        keep_sent_hours=args.keep_sent_hours,
        segment_timeout=args.segment_timeout,
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
    except SegmentationError as err:
        logger.error("cannot load checkpoint %s: %s", args.checkpoint, err)
        node.stop(drain=False)
        return 2
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
