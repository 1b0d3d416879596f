"""Prometheus metrics shared by every service, and the ``/metrics`` HTTP endpoint.

Names follow go-grpc-prometheus (``grpc_server_handled_total{grpc_service,grpc_method,grpc_type,
grpc_code}``) so existing dashboards and alerts apply. Metrics live in an explicit
``CollectorRegistry`` (the process default unless a test passes its own), created once per registry.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Latency buckets (seconds) spanning sub-millisecond control calls to multi-minute streams.
HANDLING_SECONDS_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


@dataclass(frozen=True)
class GrpcServerMetrics:
    started: Counter
    handled: Counter
    handling_seconds: Histogram
    msg_received: Counter
    msg_sent: Counter
    build_info: Gauge


_LABELS = ("grpc_service", "grpc_method", "grpc_type")
_by_registry: dict[int, GrpcServerMetrics] = {}
_lock = threading.Lock()


def grpc_server_metrics(registry: CollectorRegistry = REGISTRY) -> GrpcServerMetrics:
    """The gRPC server metrics registered in ``registry`` (created on first use)."""
    with _lock:
        metrics = _by_registry.get(id(registry))
        if metrics is None:
            metrics = GrpcServerMetrics(
                started=Counter(
                    "grpc_server_started", "RPCs started on the server.", _LABELS, registry=registry
                ),
                handled=Counter(
                    "grpc_server_handled",
                    "RPCs completed on the server, by status code.",
                    (*_LABELS, "grpc_code"),
                    registry=registry,
                ),
                handling_seconds=Histogram(
                    "grpc_server_handling_seconds",
                    "Time from RPC start to completion on the server.",
                    _LABELS,
                    buckets=HANDLING_SECONDS_BUCKETS,
                    registry=registry,
                ),
                msg_received=Counter(
                    "grpc_server_msg_received", "Messages received by the server.", _LABELS, registry=registry
                ),
                msg_sent=Counter(
                    "grpc_server_msg_sent", "Messages sent by the server.", _LABELS, registry=registry
                ),
                build_info=Gauge(
                    "trillium_build_info",
                    "Always 1; labels carry the running service's version.",
                    ("service", "version", "git_sha"),
                    registry=registry,
                ),
            )
            _by_registry[id(registry)] = metrics
        return metrics


class MetricsEndpoint:
    """The ``/metrics`` HTTP endpoint on its own port (0 picks a free one)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry = REGISTRY) -> None:
        self._server: WSGIServer
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
