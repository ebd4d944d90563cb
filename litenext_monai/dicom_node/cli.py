"""litenext-dicom-node: a DICOM node that segments every image series it receives and sends the SEG on.

Usage::

    litenext-dicom-node [serve] --ae-title LITENEXT --port 11112 \\
        --destination ORTHANC@pacs.example.org:4242 --checkpoint models/model.pt \\
        --storage /var/lib/litenext-node --allow ORTHANC@10.1.2.3 [--allow MODALITY@10.1.0.0/16] \\
        [--tls-cert node.pem --tls-key node.key --tls-ca ca.pem] [--health-port 9102] [...]
    litenext-dicom-node status --storage /var/lib/litenext-node [--json]
    litenext-dicom-node requeue JOB_ID --storage /var/lib/litenext-node

Serving (the default when no subcommand is given): the node is a Storage SCP (with C-ECHO) for the
usual image storage classes; other objects (RT Plan, structured reports, ...) are refused with
status 0x0122. Only the AE titles and addresses given with --allow may open an association (none
without it, unless --allow-any). Received instances are grouped by series; once a series has
received nothing for --series-timeout seconds it is segmented in a separate worker process
(restarted if it crashes) and its DICOM SEG is C-STOREd to --destination. Instances arriving after
that give a new SEG of the whole series that supersedes the first (docs/dicom-node-pipeline.md).

Everything received is queued on disk under --storage (mode 0700) before it is acknowledged: a node
that is killed resumes its queue at the next start. SIGTERM (or Ctrl-C) stops listening, segments
and sends what is queued, then exits; a second signal exits after the current item, leaving the
rest queued. ``status`` prints the queue counts (incoming, per job state, sent, failed) and the
failed jobs with their reasons (no patient data); ``requeue`` moves a failed job back to the queue
(segmented again at the node's next start).

Exit status: 0 after a clean stop, 2 on bad arguments, unusable TLS files, an unusable checkpoint or
a port in use; ``status``/``requeue``: 0, or 2 when the storage folder or the job does not exist.
See docs/dicom-node.md for the deployment guide and the flag reference, docs/dicom-node-pipeline.md
for series timeout, worker process, retries and superseding SEGs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

__all__ = ["build_parser", "main"]

logger = logging.getLogger("litenext_monai.dicom_node")

_SUBCOMMANDS = ("serve", "status", "requeue")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``serve`` command line (also used when no subcommand is given), listing ``status`` and ``requeue``."""
    from .limits import Limits
    from .node import DEFAULT_SERIES_DESCRIPTION

    defaults = Limits()
    parser = argparse.ArgumentParser(
        prog="litenext-dicom-node",
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
    parser.add_argument("--device", default="cpu", help="torch device for inference (default cpu)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    pipeline = parser.add_argument_group("series, segmentation and delivery")
    pipeline.add_argument(
        "--series-timeout",
        type=float,
        default=None,
        help="segment a series once it has received no instance for this many seconds (default 60)",
    )
    pipeline.add_argument(
        "--quiet-seconds", type=float, default=None, help="deprecated alias of --series-timeout"
    )
    pipeline.add_argument(
        "--max-attempts",
        type=int,
        default=2,
        help="a series that took the segmentation worker down this many times goes to failed/ (default 2)",
    )
    pipeline.add_argument(
        "--max-send-hours",
        type=float,
        default=72.0,
        help="a SEG not delivered this many hours after its first attempt goes to failed/ (default 72)",
    )
    pipeline.add_argument(
        "--keep-sent-hours",
        type=float,
        default=24.0,
        help="keep the instances of a delivered series this long, so that late instances get a SEG "
        "of the whole series (default 24; 0: do not keep)",
    )
    pipeline.add_argument(
        "--segment-timeout",
        type=float,
        default=None,
        help="kill the worker when one series takes longer than this many seconds (counts as a crash; "
        "default: no limit)",
    )

    seg = parser.add_argument_group("SEG content")
    seg.add_argument("--segment-label", default=None, help="segment label (default: the model card's)")
    seg.add_argument(
        "--segment-code",
        default=None,
        help="segmented property type as SCHEME:VALUE:MEANING, e.g. SCT:10200004:Liver (default: the "
        "model card's)",
    )
    seg.add_argument(
        "--series-description",
        default=DEFAULT_SERIES_DESCRIPTION,
        help=f"Series Description of the SEGs (default {DEFAULT_SERIES_DESCRIPTION!r})",
    )

    access = parser.add_argument_group("access control")
    access.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="AET@HOST",
        help="accept associations from this calling AE title ('*': any) at this HOST (IP address, CIDR "
        "network, or host name resolved at start); repeatable. Without it every association is refused",
    )
    access.add_argument(
        "--allow-any", action="store_true", help="accept any AE title from any address (logged as a warning)"
    )

    tls = parser.add_argument_group("TLS")
    tls.add_argument("--tls-cert", help="PEM certificate of the node: its port becomes a TLS port")
    tls.add_argument("--tls-key", help="PEM private key of --tls-cert")
    tls.add_argument("--tls-ca", help="PEM CA: peers must present a client certificate signed by it")
    tls.add_argument("--destination-tls-ca", help="PEM CA of the destination: send SEGs over TLS")
    tls.add_argument("--destination-tls-cert", help="PEM client certificate for the destination")
    tls.add_argument("--destination-tls-key", help="PEM private key of --destination-tls-cert")

    limits = parser.add_argument_group("limits")
    limits.add_argument(
        "--max-pdu",
        type=int,
        default=defaults.max_pdu,
        help=f"largest PDU received, bytes (default {defaults.max_pdu})",
    )
    limits.add_argument(
        "--max-associations",
        type=_positive_int,
        default=defaults.max_associations,
        help=f"associations served at once (default {defaults.max_associations})",
    )
    limits.add_argument(
        "--max-instance-mb",
        type=float,
        default=defaults.max_instance_mb,
        help=f"largest instance accepted, MiB (default {defaults.max_instance_mb:g}); bigger: status 0xA701",
    )
    limits.add_argument(
        "--max-pixel-mb",
        type=float,
        default=defaults.max_pixel_mb,
        help=f"largest decoded pixel data, MiB, from the header (default {defaults.max_pixel_mb:g})",
    )
    limits.add_argument(
        "--accept-deflate",
        action="store_true",
        help="offer Deflated Explicit VR Little Endian (inflation capped at --max-instance-mb)",
    )
    limits.add_argument(
        "--max-storage-gb",
        type=float,
        default=defaults.max_storage_gb,
        help="quota of --storage, GiB (default none)",
    )
    limits.add_argument(
        "--min-free-gb",
        type=float,
        default=defaults.min_free_gb,
        help=f"free-space watermark of the storage disk, GiB (default {defaults.min_free_gb:g})",
    )
    limits.add_argument(
        "--keep-failed-days",
        type=float,
        default=defaults.keep_failed_days,
        help=f"delete failed/ entries older than this (default {defaults.keep_failed_days:g})",
    )

    health = parser.add_argument_group("health and metrics")
    health.add_argument("--health-port", type=int, help="serve HTTP /healthz and /metrics on this port")
    health.add_argument(
        "--health-host", default="127.0.0.1", help="address of that server (default 127.0.0.1)"
    )

    # The other subcommands, for --help (and the docs check); main() dispatches them before this
    # parser sees the arguments, so serving needs no subcommand.
    commands = parser.add_subparsers(
        title="other commands", metavar="{status,requeue}", dest="command", required=False
    )
    _status_arguments(commands.add_parser("status", help=_STATUS_HELP, description=_STATUS_HELP))
    _requeue_arguments(commands.add_parser("requeue", help=_REQUEUE_HELP, description=_REQUEUE_HELP))
    return parser


def _series_timeout(args: argparse.Namespace) -> float:
    """``--series-timeout``, else the deprecated ``--quiet-seconds`` (with a warning), else 60 s."""
    if args.quiet_seconds is not None:
        logger.warning("--quiet-seconds is deprecated; use --series-timeout")
    value = args.series_timeout if args.series_timeout is not None else args.quiet_seconds
    value = 60.0 if value is None else value
    if value <= 0:
        flag = "--series-timeout" if args.series_timeout is not None else "--quiet-seconds"
        raise ValueError(f"{flag} must be positive, got {value:g}")
    return value


def _serve(argv: Sequence[str]) -> int:
    from litenext_monai.io.dicom_seg import parse_code

    from .access import AccessPolicy
    from .limits import Limits
    from .node import DicomNode, checkpoint_worker
    from .redact import configure_node_logging
    from .sender import parse_destination
    from .tls import server_context
    from .worker import SegmentationError

    args = build_parser().parse_args(argv)
    redactor = configure_node_logging(getattr(logging, args.log_level))
    try:
        destination = parse_destination(
            args.destination, args.destination_tls_ca, args.destination_tls_cert, args.destination_tls_key
        )
        destination.tls_context()  # a missing or unusable file fails now, not at the first SEG
        if not 0 < args.port < 65536 or len(args.ae_title.strip()) == 0 or len(args.ae_title) > 16:
            raise ValueError("--port must be 1-65535 and --ae-title 1-16 characters")
        series_timeout = _series_timeout(args)
        if args.max_attempts < 1:
            raise ValueError(f"--max-attempts must be at least 1, got {args.max_attempts}")
        if args.max_send_hours <= 0:
            raise ValueError(f"--max-send-hours must be positive, got {args.max_send_hours:g}")
        if args.keep_sent_hours < 0:
            raise ValueError(f"--keep-sent-hours must be 0 or more, got {args.keep_sent_hours:g}")
        if args.segment_timeout is not None and args.segment_timeout <= 0:
            raise ValueError(f"--segment-timeout must be positive, got {args.segment_timeout:g}")
        if args.segment_code is not None:
            try:
                parse_code(args.segment_code)
            except ValueError as err:
                raise ValueError(f"--segment-code: {err}") from err
        if args.health_port is not None and not 0 <= args.health_port < 65536:
            raise ValueError(f"--health-port must be 0-65535, got {args.health_port}")
        limits = Limits(
            max_pdu=args.max_pdu,
            max_associations=args.max_associations,
            max_instance_mb=args.max_instance_mb,
            max_pixel_mb=args.max_pixel_mb,
            accept_deflate=args.accept_deflate,
            max_storage_gb=args.max_storage_gb,
            min_free_gb=args.min_free_gb,
            keep_failed_days=args.keep_failed_days,
        )
        policy = AccessPolicy(args.ae_title, args.allow, args.allow_any)
        if (args.tls_cert is None) != (args.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if args.tls_ca is not None and args.tls_cert is None:
            raise ValueError("--tls-ca needs --tls-cert and --tls-key (the port must be a TLS port)")
        if args.tls_cert is not None:
            server_context(args.tls_cert, args.tls_key, args.tls_ca)
    except ValueError as err:
        logger.error("%s", err)
        return 2
    if ":/" not in args.checkpoint and not Path(args.checkpoint).is_file():  # not an MLflow URI
        logger.error("cannot load checkpoint %s: no such file", args.checkpoint)
        return 2
    # The checkpoint is loaded in the segmentation worker process when the node starts; a
    # checkpoint that cannot be loaded makes node.start() raise SegmentationError (exit 2).
    factory = checkpoint_worker(
        args.checkpoint,
        device=args.device,
        series_description=args.series_description,
        segment_label=args.segment_label,
        segment_code=args.segment_code,
    )
    os.umask(0o077)  # everything the node writes (instances, SEGs, job files) is its user's only
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
        allow=policy.rules,
        allow_any=args.allow_any,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        limits=limits,
        health_port=args.health_port,
        health_host=args.health_host,
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
        logger.error("cannot listen on %s:%d (or on --health-port): %s", args.host, args.port, err)
        node.stop(drain=False)
        return 2
    while not stop.wait(1.0):
        pass
    node.stop(drain=True)
    return 0


_STATUS_HELP = "Counts per queue state (incoming, jobs, sent, failed) and the failed jobs with their reasons."
_REQUEUE_HELP = "Move a failed job back to the queue (segmented again at the node's next start)."


def _status_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--storage", required=True, help="the node's storage folder (--storage of serve)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def _requeue_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("job_id", metavar="JOB_ID", help="a job id as `status` lists it")
    parser.add_argument("--storage", required=True, help="the node's storage folder (--storage of serve)")
    return parser


def _existing_storage(storage: str) -> Path:
    root = Path(storage)
    if not (root / "jobs").is_dir():
        print(f"error: {root} is not a node's storage folder (no jobs/ in it)", file=sys.stderr)
        raise SystemExit(2)
    return root


def _status(argv: Sequence[str]) -> int:
    from .operations import failed_jobs, queue_counts

    parser = argparse.ArgumentParser(prog="litenext-dicom-node status", description=_STATUS_HELP)
    args = _status_arguments(parser).parse_args(argv)
    root = _existing_storage(args.storage)
    counts, failed = queue_counts(root), failed_jobs(root)
    if args.json:
        print(json.dumps({"counts": counts, "failed": [vars(job) for job in failed]}, indent=1))
        return 0
    print(f"storage {root}")
    for state, count in counts.items():
        print(f"  {state:<10} {count}")
    if failed:
        print("failed jobs:")
        for job in failed:
            print(
                f"  {job.job_id}  series {job.series_uid}  generation {job.generation}  "
                f"segmentations {job.segment_attempts} (crashes {job.crashes}, transient "
                f"{job.transient_failures})  deliveries failed {job.attempts}  reason: {job.reason}"
            )
    return 0


def _requeue(argv: Sequence[str]) -> int:
    from .operations import requeue

    parser = argparse.ArgumentParser(prog="litenext-dicom-node requeue", description=_REQUEUE_HELP)
    args = _requeue_arguments(parser).parse_args(argv)
    root = _existing_storage(args.storage)
    try:
        target = requeue(root, args.job_id)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"requeued {target.name}: pending; the node segments it again at its next start")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``serve`` (the default), ``status`` or ``requeue``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in _SUBCOMMANDS else "serve"
    rest = argv[1:] if argv and argv[0] in _SUBCOMMANDS else argv
    return {"serve": _serve, "status": _status, "requeue": _requeue}[command](rest)


if __name__ == "__main__":
    sys.exit(main())
