"""Wires the InferenceService servicer into the service kit: models checked before binding, loaded
during warm-up (NOT_SERVING until every configured model is in memory), engines closed on stop."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from grpc import aio

from trillium.inference.service.catalogue import default_models_dir
from trillium.inference.service.metrics import create_metrics, engine_observer
from trillium.inference.service.models import check_checkpoint, load_specs
from trillium.inference.service.runtime import LoadedModel, ModelRuntime
from trillium.inference.service.servicer import InferenceServicer
from trillium.inference.service.settings import InferenceSettings
from trillium.inference.v1 import inference_pb2, inference_pb2_grpc
from trillium.servicekit.server import ServiceDefinition, ServiceRuntime
from trillium.servicekit.settings import ServiceSettings

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name


def build_definition(settings: ServiceSettings, extra: InferenceSettings | None = None) -> ServiceDefinition:
    """The service, its models checked (a missing or corrupt checkpoint raises, naming the file)."""
    extra = extra or InferenceSettings.from_env()
    specs = load_specs(
        extra.models_config, Path(extra.models_dir) if extra.models_dir else default_models_dir()
    )
    for spec in specs:
        check_checkpoint(spec)
    models = ModelRuntime(specs, extra)
    state: dict[str, InferenceServicer] = {}

    def register(server: aio.Server, runtime: ServiceRuntime) -> None:
        servicer = InferenceServicer(runtime.sessions, models, create_metrics(runtime.registry), extra)
        state["servicer"] = servicer
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, server)

    async def warmup(runtime: ServiceRuntime) -> None:
        metrics = state["servicer"].metrics

        def observe(loaded: LoadedModel) -> None:
            observer = engine_observer(metrics, loaded.name)
            loaded.engine.on_step = observer
            observer(loaded.engine, None, 0.0)

        await models.load_all(on_loaded=observe)

    async def shutdown(runtime: ServiceRuntime) -> None:
        models.close()

    return ServiceDefinition(
        name="inference",
        version=version("trillium-inference-service"),
        service_names=[SERVICE_NAME],
        register=register,
        warmup=warmup,
        shutdown=shutdown,
        session_namespace="inference",
    )
