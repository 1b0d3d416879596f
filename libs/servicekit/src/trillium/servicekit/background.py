"""Run a service on a background event-loop thread — for tests, notebooks and embedding.

The caller keeps its own (synchronous) thread and talks to the service over real gRPC.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from trillium.servicekit.server import ServiceDefinition, ServiceRuntime
from trillium.servicekit.settings import ServiceSettings

T = TypeVar("T")


class BackgroundService:
    """Starts ``definition`` with ``settings`` on its own loop thread; ``stop()`` drains it.

    A fresh ``CollectorRegistry`` is used by default so several instances can coexist in one process.
    """

    def __init__(
        self,
        definition: ServiceDefinition,
        settings: ServiceSettings | None = None,
        registry: CollectorRegistry | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.settings = settings or ServiceSettings(port=0, metrics_port=0, drain_seconds=0, grace_seconds=2)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name=f"{definition.name}-loop", daemon=True
        )
        self._thread.start()
        try:
            self.runtime: ServiceRuntime = self.call(
                self._create(definition, registry or CollectorRegistry()), start_timeout
            )
        except BaseException:
            self._close_loop()
            raise

    async def _create(self, definition: ServiceDefinition, registry: CollectorRegistry) -> ServiceRuntime:
        runtime = ServiceRuntime(definition, self.settings, registry)
        await runtime.start()
        return runtime

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run ``coroutine`` on the service's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    @property
    def target(self) -> str:
        return f"{self.settings.host}:{self.runtime.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.call(asyncio.wait_for(self.runtime.ready.wait(), timeout), timeout + 1)

    def stop(self, drain_seconds: float | None = None, grace_seconds: float | None = None) -> None:
        if self.loop.is_closed():
            return
        try:
            self.call(self.runtime.stop(drain_seconds, grace_seconds), timeout=None)
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    def __enter__(self) -> BackgroundService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
