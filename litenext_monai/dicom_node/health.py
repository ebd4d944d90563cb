"""Liveness and Prometheus metrics of a running DICOM node over HTTP.

``GET /healthz`` answers ``200 ok`` while the node listens and its workers are alive, ``503`` with
the reason otherwise (a load balancer or systemd watchdog can act on it). ``GET /metrics`` is the
Prometheus text format, built with ``prometheus_client`` from the node's counters and the queue on
disk at scrape time:

==========================================  =====  ===============================================
metric                                      type   meaning
==========================================  =====  ===============================================
``litenext_node_queue_depth{state}``        gauge  series incoming, jobs pending/segmented/..., failed
``litenext_node_received_instances_total``  count  instances stored since start
``litenext_node_refused_instances_total``   count  instances answered with a failure status
``litenext_node_segmented_series_total``    count  SEGs written since start
``litenext_node_sent_segs_total``           count  SEGs acknowledged by the destination
``litenext_node_failed_jobs_total``         count  jobs moved to ``failed/`` since start
``litenext_node_last_success_timestamp``    gauge  Unix time of the last acknowledged SEG (0: none)
``litenext_node_up``                        gauge  1 when healthy (as ``/healthz``), else 0
==========================================  =====  ===============================================

The server binds to 127.0.0.1 by default: metrics name queue sizes, nothing of a patient, but
there is no reason to show them to the network unless asked (``--health-host``).
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .operations import queue_counts

__all__ = ["HealthServer", "NodeCollector", "ReportingNode"]

logger = logging.getLogger(__name__)


class ReportingNode(Protocol):
    """What the health server reads of a :class:`~litenext_monai.dicom_node.DicomNode`.

    (A protocol rather than the class itself, so that this module does not import ``node``, which
    starts the server.) ``queue.root`` is the storage folder, ``receiver.received``/``refused``
    count instances, ``segmented``/``sent``/``failed`` count SEGs and jobs, ``last_success`` is a
    Unix time or ``None``.
    """

    queue: object
    receiver: object
    segmented: int
    sent: int
    failed: int
    last_success: float | None

    def health(self) -> tuple[bool, str]: ...


class NodeCollector(Collector):
    """Reads a :class:`~litenext_monai.dicom_node.DicomNode`'s counters and queue at each scrape."""

    def __init__(self, node: ReportingNode) -> None:
        self.node = node

    def collect(self):
        node = self.node
        depth = GaugeMetricFamily(
            "litenext_node_queue_depth", "Series incoming, and jobs by state in the queue", labels=["state"]
        )
        for state, count in sorted(queue_counts(node.queue.root).items()):
            depth.add_metric([state], count)
        yield depth
        counters = (
            ("received_instances", "Instances stored since start", node.receiver.received),
            (
                "refused_instances",
                "Instances answered with a failure status since start",
                node.receiver.refused,
            ),
            ("segmented_series", "SEGs written since start", node.segmented),
            ("sent_segs", "SEGs acknowledged by the destination since start", node.sent),
            ("failed_jobs", "Jobs moved to failed/ since start", node.failed),
        )
        for name, text, value in counters:
            yield CounterMetricFamily(f"litenext_node_{name}", text, value=value)
        yield GaugeMetricFamily(
            "litenext_node_last_success_timestamp",
            "Unix time of the last SEG acknowledged by the destination (0 before the first)",
            value=node.last_success or 0.0,
        )
        yield GaugeMetricFamily(
            "litenext_node_up", "1 when /healthz answers 200", value=float(node.health()[0])
        )


class HealthServer:
    """``/healthz`` and ``/metrics`` of one node on ``host:port`` (port 0: any free port).

    Args:
        node: the node to report on.
        host: address to bind (127.0.0.1 by default).
        port: TCP port.
    """

    def __init__(self, node: ReportingNode, host: str = "127.0.0.1", port: int = 0) -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(node))
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread: threading.Thread | None = None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    ok, reason = health.node.health()
                    self._reply(200 if ok else 503, "text/plain; charset=utf-8", f"{reason}\n".encode())
                elif path == "/metrics":
                    try:
                        body = generate_latest(health.registry)
                    except Exception as err:  # noqa: BLE001 - a scrape must not kill the server
                        logger.exception("Metrics could not be collected")
                        self._reply(500, "text/plain; charset=utf-8", f"{type(err).__name__}\n".encode())
                        return
                    self._reply(200, CONTENT_TYPE_LATEST, body)
                else:
                    self._reply(404, "text/plain; charset=utf-8", b"not found: use /healthz or /metrics\n")

            def _reply(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
                logger.debug("health %s: " + format, self.client_address[0], *args)

        return Handler

    def start(self) -> HealthServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="litenext-health", daemon=True
        )
        self._thread.start()
        logger.info("Health and metrics on http://%s:%d/healthz and /metrics", self.host, self.port)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
