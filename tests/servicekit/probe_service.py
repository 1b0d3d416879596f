"""A small InferenceService used to exercise the service kit over real gRPC.

Also runnable as a process (``python probe_service.py PORT_FILE``) for the SIGTERM tests.
"""

from __future__ import annotations

import asyncio
import sys

from trillium.inference.v1 import inference_pb2, inference_pb2_grpc
from trillium.servicekit.errors import NotFoundError, ValidationError
from trillium.servicekit.server import ServiceDefinition, ServiceRuntime

SERVICE_NAME = "trillium.inference.v1.InferenceService"
STEP_SECONDS = 0.2


class ProbeServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, runtime: ServiceRuntime | None = None) -> None:
        self.runtime = runtime

    async def DeleteSession(self, request, context):
        """Backed by the runtime's Redis session store (when the probe keeps sessions)."""
        if self.runtime is None or self.runtime.sessions is None:
            raise NotImplementedError
        deleted = await self.runtime.sessions.delete(request.session_id, timeout=context.time_remaining())
        return inference_pb2.DeleteSessionResponse(deleted=deleted)

    async def ListModels(self, request, context):
        return inference_pb2.ListModelsResponse(models=[inference_pb2.ModelInfo(name="probe")])

    async def GetSession(self, request, context):
        if not request.session_id:
            raise ValidationError("session_id", "must not be empty")
        if request.session_id == "crash":
            raise RuntimeError("a bug in the handler")
        raise NotFoundError(f"no session {request.session_id!r}", field="session_id")

    async def Generate(self, request, context):
        for index in range(request.generation.max_new_tokens):
            await asyncio.sleep(STEP_SECONDS if request.model == "slow" else 0)
            if request.model == "fail-midway" and index == 2:
                raise ValidationError("generation.max_new_tokens", "too many for this probe")
            yield inference_pb2.GenerateResponse(delta=inference_pb2.TokenDelta(index=index, text=str(index)))


def probe_definition(
    warmup_gate: asyncio.Event | None = None, admin_methods=(), session_namespace: str | None = None
) -> ServiceDefinition:
    async def warmup(runtime: ServiceRuntime) -> None:
        if warmup_gate is not None:
            await warmup_gate.wait()

    return ServiceDefinition(
        name="probe",
        version="0.0.0",
        service_names=[SERVICE_NAME],
        register=lambda server, runtime: inference_pb2_grpc.add_InferenceServiceServicer_to_server(
            ProbeServicer(runtime), server
        ),
        warmup=warmup,
        admin_methods=admin_methods,
        session_namespace=session_namespace,
    )


async def _main(port_file: str) -> int:
    from pathlib import Path

    from trillium.servicekit.server import serve_until_signal
    from trillium.servicekit.settings import ServiceSettings

    settings = ServiceSettings(port=0, metrics_port=-1, drain_seconds=0.5, grace_seconds=10)
    runtime = ServiceRuntime(probe_definition(), settings)

    async def announce() -> None:
        await runtime.ready.wait()
        Path(port_file).write_text(str(runtime.port))

    task = asyncio.create_task(announce())
    code = await serve_until_signal(runtime)
    task.cancel()
    return code


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(sys.argv[1])))
