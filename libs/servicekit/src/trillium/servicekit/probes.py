"""Probes a running service from outside: gRPC health, reflection and the ``/metrics`` endpoint.

Used by ``make demo``, the end-to-end tests and operators' smoke checks.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from trillium.servicekit.client import open_sync_channel


def health_status(target: str, service: str = "", timeout: float = 5.0) -> str:
    """The health status name of ``service`` at ``target`` ("SERVING", "NOT_SERVING", ...)."""
    with open_sync_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def reflected_services(target: str, timeout: float = 5.0) -> list[str]:
    """Full names of the services the server lists through reflection."""
    with open_sync_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = stub.ServerReflectionInfo(iter([request]), timeout=timeout)
        names: list[str] = []
        for response in responses:
            names += [service.name for service in response.list_services_response.service]
    return sorted(names)


def scrape_metrics(host: str, port: int, timeout: float = 5.0) -> str:
    """The text exposition of ``http://host:port/metrics``."""
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as response:
        return response.read().decode()


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_value(exposition: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0.0 when none match)."""
    total = 0.0
    wanted = dict(labels or {})
    for line in exposition.splitlines():
        match = _SAMPLE.match(line)
        if not match or match["name"] != name:
            continue
        sample_labels = dict(_LABEL.findall(match["labels"] or ""))
        if all(sample_labels.get(k) == v for k, v in wanted.items()):
            total += float(match["value"])
    return total


def wait_until_serving(target: str, service: str = "", timeout: float = 30.0) -> None:
    """Poll health until ``service`` is SERVING; raises ``TimeoutError`` otherwise."""
    import time

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            last = health_status(target, service, timeout=1.0)
            if last == "SERVING":
                return
        except grpc.RpcError as exc:
            last = exc.code().name
        time.sleep(0.05)
    raise TimeoutError(f"{service or 'server'} at {target} not SERVING after {timeout}s (last: {last})")
