"""The ``grpc.aio`` server bootstrap every Trillium service runs on.

Order of start-up: interceptors (request id -> metrics -> auth -> error mapping), the service's
servicers, health (``""`` SERVING at once; each service name NOT_SERVING until its warm-up finishes),
reflection, bind (TLS when configured), start, ``/metrics``. On SIGTERM: health NOT_SERVING
everywhere, wait ``drain_seconds`` so load balancers drop the pod, ``server.stop(grace)`` lets
in-flight RPCs finish, then the service's shutdown hook closes its clients.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import REGISTRY, CollectorRegistry

from trillium.servicekit.client import channel_options
from trillium.servicekit.embedded_redis import EmbeddedRedis, start_embedded_redis
from trillium.servicekit.interceptors import (
    BearerTokenAuthInterceptor,
    ErrorMappingInterceptor,
    MetricsInterceptor,
    RequestIdInterceptor,
)
from trillium.servicekit.metrics import MetricsEndpoint, grpc_server_metrics
from trillium.servicekit.redis_store import (
    SessionStore,
    StoreMetrics,
    StoreUnavailableError,
    create_store_metrics,
)
from trillium.servicekit.settings import ServiceSettings
from trillium.servicekit.tls import server_credentials

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class ServiceDefinition:
    """What a service adds to the kit: its servicers and its start-up and shutdown work.

    ``register(server, runtime)`` adds servicers; ``warmup(runtime)`` (model or scene load) runs after
    the server starts (after Redis answers, when the service keeps sessions), while the service's health reads
    NOT_SERVING; ``shutdown(runtime)`` closes
    clients after the server stopped. ``admin_methods`` need an admin token when auth is on.
    """

    name: str
    version: str
    service_names: Sequence[str]
    register: Callable[[aio.Server, ServiceRuntime], None]
    warmup: Callable[[ServiceRuntime], Awaitable[None]] | None = None
    shutdown: Callable[[ServiceRuntime], Awaitable[None]] | None = None
    admin_methods: Collection[str] = ()
    # When set, the runtime connects a Redis SessionStore under this key namespace (REDIS_URL, or the
    # embedded server when unset) before the service reports SERVING.
    session_namespace: str | None = None


@dataclass
class ServiceRuntime:
    """The running server's state, handed to a service's hooks and the tests."""

    definition: ServiceDefinition
    settings: ServiceSettings
    registry: CollectorRegistry = REGISTRY
    server: aio.Server | None = None
    health: health.aio.HealthServicer = field(default_factory=health.aio.HealthServicer)
    port: int = 0
    health_port: int = -1
    metrics_port: int = -1
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    warmup_error: BaseException | None = None
    sessions: SessionStore | None = None
    embedded_redis: EmbeddedRedis | None = None
    _health_server: aio.Server | None = None
    _metrics: MetricsEndpoint | None = None
    _warmup_task: asyncio.Task | None = None
    _stopped: bool = False

    async def start(self) -> None:
        """Build, bind and start the server; warm-up continues in the background."""
        settings, definition = self.settings, self.definition
        metrics = grpc_server_metrics(self.registry)
        git_sha = os.environ.get("TRILLIUM_GIT_SHA", "unknown")
        metrics.build_info.labels(definition.name, definition.version, git_sha).set(1)
        self.server = aio.server(
            interceptors=self._interceptors(metrics),
            options=channel_options(settings.max_message_bytes, settings.keepalive_seconds),
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        await self.health.set("", SERVING)
        for name in definition.service_names:
            await self.health.set(name, NOT_SERVING)
        if definition.session_namespace:
            await self._open_session_store(definition.session_namespace)
        definition.register(self.server, self)
        reflection.enable_server_reflection(
            (*definition.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        self.port = self._bind(self.server, settings.port)
        if settings.health_port >= 0:
            self._health_server = aio.server(options=channel_options(settings.max_message_bytes))
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
            self.health_port = self._health_server.add_insecure_port(
                f"{settings.host}:{settings.health_port}"
            )
            await self._health_server.start()
        await self.server.start()
        if settings.metrics_port >= 0:
            self._metrics = MetricsEndpoint(
                settings.metrics_host or settings.host, settings.metrics_port, self.registry
            )
            self.metrics_port = self._metrics.port
        log.info(
            "%s %s listening",
            definition.name,
            definition.version,
            extra={"port": self.port, "metrics_port": self.metrics_port, "tls": settings.tls_enabled},
        )
        self._warmup_task = asyncio.create_task(self._warm_up())

    async def _open_session_store(self, namespace: str) -> None:
        url = self.settings.redis_url
        if not url:
            self.embedded_redis = await asyncio.to_thread(
                start_embedded_redis, self.settings.data_dir or None
            )
            url = self.embedded_redis.url
        store_metrics = session_store_metrics(namespace, self.registry)
        self.sessions = SessionStore(
            url,
            namespace,
            self.settings.session_ttl_seconds,
            ops_total=store_metrics.ops_total,
            op_seconds=store_metrics.op_seconds,
        )
        log.info(
            "session store configured",
            extra={"redis": "embedded" if self.embedded_redis else "external", "namespace": namespace},
        )

    async def _wait_for_redis(self) -> None:
        """Retry PING until Redis answers; the service stays NOT_SERVING meanwhile."""
        assert self.sessions is not None
        delay = 0.2
        while True:
            try:
                await self.sessions.ping(timeout=2.0)
                return
            except StoreUnavailableError as exc:
                log.warning("Redis not reachable yet (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _interceptors(self, metrics) -> list[aio.ServerInterceptor]:
        interceptors: list[aio.ServerInterceptor] = [RequestIdInterceptor(), MetricsInterceptor(metrics)]
        tokens = self.settings.all_auth_tokens()
        if tokens or self.settings.admin_tokens:
            interceptors.append(
                BearerTokenAuthInterceptor(tokens, self.settings.admin_tokens, self.definition.admin_methods)
            )
        interceptors.append(ErrorMappingInterceptor())
        return interceptors

    def _bind(self, server: aio.Server, port: int) -> int:
        address = f"{self.settings.host}:{port}"
        if self.settings.tls_enabled:
            bound = server.add_secure_port(address, server_credentials(self.settings))
        else:
            bound = server.add_insecure_port(address)
        if bound == 0:
            raise OSError(f"port: could not bind {address}")
        return bound

    async def _warm_up(self) -> None:
        try:
            if self.sessions is not None:
                await self._wait_for_redis()
            if self.definition.warmup is not None:
                await self.definition.warmup(self)
        except Exception as exc:  # the service stays NOT_SERVING; probes and logs show why
            self.warmup_error = exc
            log.exception("%s warm-up failed; staying NOT_SERVING", self.definition.name)
            return
        if not self._stopped:
            for name in self.definition.service_names:
                await self.health.set(name, SERVING)
            self.ready.set()
            log.info("%s ready", self.definition.name)

    async def stop(self, drain_seconds: float | None = None, grace_seconds: float | None = None) -> None:
        """Drain (health NOT_SERVING, wait), stop accepting RPCs, let in-flight ones finish, close."""
        if self._stopped or self.server is None:
            return
        self._stopped = True
        drain = self.settings.drain_seconds if drain_seconds is None else drain_seconds
        grace = self.settings.grace_seconds if grace_seconds is None else grace_seconds
        log.info("%s draining for %.1fs", self.definition.name, drain)
        await self.health.enter_graceful_shutdown()
        if drain > 0:
            await asyncio.sleep(drain)
        if self._warmup_task is not None and not self._warmup_task.done():
            self._warmup_task.cancel()
        await self.server.stop(grace)
        if self.definition.shutdown is not None:
            try:
                await self.definition.shutdown(self)
            except Exception:
                log.exception("%s shutdown hook failed", self.definition.name)
        await self._close_session_store()
        if self._health_server is not None:
            await self._health_server.stop(0)
        if self._metrics is not None:
            self._metrics.close()
        log.info("%s stopped", self.definition.name)

    async def _close_session_store(self) -> None:
        if self.sessions is not None:
            await self.sessions.close()
        if self.embedded_redis is not None:
            await asyncio.to_thread(self.embedded_redis.stop)


_store_metrics: dict[tuple[int, str], StoreMetrics] = {}


def session_store_metrics(namespace: str, registry: CollectorRegistry) -> StoreMetrics:
    """``<namespace>_redis_ops_total`` and ``<namespace>_redis_op_seconds``, once per registry."""
    key = (id(registry), namespace)
    if key not in _store_metrics:
        _store_metrics[key] = create_store_metrics(namespace, registry)
    return _store_metrics[key]


async def serve_until_signal(runtime: ServiceRuntime) -> int:
    """Start ``runtime`` and run until SIGTERM or SIGINT, then drain and stop; returns the exit code."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    await runtime.start()
    await stop_requested.wait()
    log.info("%s received a stop signal", runtime.definition.name)
    await runtime.stop()
    return 0
