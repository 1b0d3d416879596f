"""Wires the Coordinator servicer into the service kit."""

from __future__ import annotations

import logging
import tempfile
from importlib.metadata import version
from pathlib import Path

from grpc import aio

from trillium.federated.service.coordinator import Coordinator, CoordinatorOptions
from trillium.federated.service.metrics import create_metrics
from trillium.federated.service.servicer import CoordinatorServicer
from trillium.federated.v1 import coordinator_pb2, coordinator_pb2_grpc
from trillium.servicekit.server import ServiceDefinition, ServiceRuntime
from trillium.servicekit.settings import ServiceSettings

SERVICE_NAME = coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name
log = logging.getLogger(__name__)


def state_dir(settings: ServiceSettings) -> Path:
    """``<data_dir>/federated``; without a data dir a temporary one (runs then do not survive restarts)."""
    if not settings.data_dir:
        directory = Path(tempfile.mkdtemp(prefix="trillium-federated-"))
        log.warning("no data_dir set: checkpoints go to %s and are lost with it", directory)
        return directory
    return Path(settings.data_dir) / "federated"


def build_definition(
    settings: ServiceSettings, options: CoordinatorOptions | None = None
) -> ServiceDefinition:
    """The coordinator service; ``options`` default to the ``TRILLIUM_FL_*`` environment."""
    options = options or CoordinatorOptions.from_env()
    holder: dict[str, Coordinator] = {}

    def register(server: aio.Server, runtime: ServiceRuntime) -> None:
        coordinator = Coordinator(state_dir(runtime.settings), create_metrics(runtime.registry), options)
        holder["coordinator"] = coordinator
        runtime.coordinator = coordinator  # type: ignore[attr-defined]  (tests reach it here)
        coordinator_pb2_grpc.add_CoordinatorServicer_to_server(CoordinatorServicer(coordinator), server)

    async def warmup(runtime: ServiceRuntime) -> None:
        coordinator = holder["coordinator"]
        coordinator.sessions = runtime.sessions
        await coordinator.resume()

    async def shutdown(runtime: ServiceRuntime) -> None:
        await holder["coordinator"].close()

    return ServiceDefinition(
        name="coordinator",
        version=version("trillium-federated-service"),
        service_names=[SERVICE_NAME],
        register=register,
        warmup=warmup,
        shutdown=shutdown,
        session_namespace="federated",
        admin_methods=[f"/{SERVICE_NAME}/StartRun", f"/{SERVICE_NAME}/StopRun"],
    )
