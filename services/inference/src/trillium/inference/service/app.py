"""Wires the InferenceService servicer into the service kit."""

from __future__ import annotations

from importlib.metadata import version

from grpc import aio

from trillium.inference.service.catalogue import default_models_dir
from trillium.inference.service.metrics import create_metrics
from trillium.inference.service.servicer import InferenceServicer
from trillium.inference.v1 import inference_pb2, inference_pb2_grpc
from trillium.servicekit.server import ServiceDefinition, ServiceRuntime
from trillium.servicekit.settings import ServiceSettings

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name


def register(server: aio.Server, runtime: ServiceRuntime) -> None:
    servicer = InferenceServicer(runtime.sessions, default_models_dir(), create_metrics(runtime.registry))
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, server)


def build_definition(settings: ServiceSettings) -> ServiceDefinition:
    return ServiceDefinition(
        name="inference",
        version=version("trillium-inference-service"),
        service_names=[SERVICE_NAME],
        register=register,
        session_namespace="inference",
    )
