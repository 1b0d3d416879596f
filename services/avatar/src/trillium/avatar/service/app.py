"""Wires the AvatarService servicer into the service kit."""

from __future__ import annotations

from importlib.metadata import version

from grpc import aio

from trillium.avatar.v1 import avatar_pb2, avatar_pb2_grpc
from trillium.servicekit.server import ServiceDefinition, ServiceRuntime
from trillium.servicekit.settings import ServiceSettings

SERVICE_NAME = avatar_pb2.DESCRIPTOR.services_by_name["AvatarService"].full_name


def register(server: aio.Server, runtime: ServiceRuntime) -> None:
    # The generated base servicer: every RPC answers UNIMPLEMENTED until the service issue lands.
    avatar_pb2_grpc.add_AvatarServiceServicer_to_server(avatar_pb2_grpc.AvatarServiceServicer(), server)


def build_definition(settings: ServiceSettings) -> ServiceDefinition:
    return ServiceDefinition(
        name="avatar",
        version=version("trillium-avatar-service"),
        service_names=[SERVICE_NAME],
        register=register,
    )
