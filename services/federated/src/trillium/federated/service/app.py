"""Wires the Coordinator servicer into the service kit."""

from __future__ import annotations

from importlib.metadata import version

from grpc import aio

from trillium.federated.v1 import coordinator_pb2, coordinator_pb2_grpc
from trillium.servicekit.server import ServiceDefinition, ServiceRuntime
from trillium.servicekit.settings import ServiceSettings

SERVICE_NAME = coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name


def register(server: aio.Server, runtime: ServiceRuntime) -> None:
    # The generated base servicer: every RPC answers UNIMPLEMENTED until the service issue lands.
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(coordinator_pb2_grpc.CoordinatorServicer(), server)


def build_definition(settings: ServiceSettings) -> ServiceDefinition:
    return ServiceDefinition(
        name="coordinator",
        version=version("trillium-federated-service"),
        service_names=[SERVICE_NAME],
        register=register,
        session_namespace="federated",
        admin_methods=[f"/{SERVICE_NAME}/StartRun", f"/{SERVICE_NAME}/StopRun"],
    )
