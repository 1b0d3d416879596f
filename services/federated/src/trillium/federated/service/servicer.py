"""The ``trillium.federated.v1.Coordinator`` servicer: gRPC in and out, everything else in ``Coordinator``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from grpc import aio

from trillium.federated.service.coordinator import Coordinator
from trillium.federated.service.updates import UpdateRejectedError
from trillium.federated.service.wire import PayloadReceiver
from trillium.federated.v1 import coordinator_pb2 as pb
from trillium.federated.v1 import coordinator_pb2_grpc
from trillium.servicekit.errors import ServiceError, UnavailableError, ValidationError


class CoordinatorServicer(coordinator_pb2_grpc.CoordinatorServicer):
    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    def _require_ready(self) -> None:
        if not self.coordinator.resumed:
            raise UnavailableError("the coordinator is restoring its last run; retry shortly")

    async def RegisterClient(self, request, context: aio.ServicerContext) -> pb.RegisterClientResponse:
        self._require_ready()
        return self.coordinator.register_client(request)

    async def Heartbeat(self, request, context: aio.ServicerContext) -> pb.HeartbeatResponse:
        self._require_ready()
        return self.coordinator.heartbeat(request.client_id)

    async def PullTask(self, request, context: aio.ServicerContext) -> AsyncIterator[pb.PullTaskResponse]:
        self._require_ready()
        header, payloads = self.coordinator.task_for(request)
        yield pb.PullTaskResponse(header=header)
        chunk_bytes = self.coordinator.options.chunk_bytes
        for payload in payloads:
            for chunk in payload.chunks(chunk_bytes):
                if context.cancelled():
                    return
                yield pb.PullTaskResponse(chunk=chunk)

    async def PushUpdate(self, request_iterator, context: aio.ServicerContext) -> pb.PushUpdateResponse:
        self._require_ready()
        first = await anext(aiter(request_iterator), None)
        if first is None or first.WhichOneof("part") != "header":
            raise ValidationError("header", "the first message of PushUpdate must be an UpdateHeader")
        header = first.header
        try:
            self.coordinator.check_update_header(header)
            receiver = PayloadReceiver(list(header.payloads), self.coordinator.options.max_update_bytes)
        except (UpdateRejectedError, ValidationError) as problem:
            async for _ in request_iterator:  # drain, so the client sees our answer rather than a reset
                pass
            return self.coordinator.reject_update(header, _as_rejection(problem))
        nbytes, problem = 0, None
        async for message in request_iterator:
            if message.WhichOneof("part") != "chunk":
                problem = problem or ValidationError("header", "only one UpdateHeader may be sent")
                continue
            nbytes += len(message.chunk.data)
            if problem is None:
                try:
                    receiver.add(message.chunk)
                except ServiceError as error:
                    problem = error
        try:
            if problem is not None:
                raise problem
            payloads = receiver.finish()
        except ValidationError as error:
            return self.coordinator.reject_update(header, _as_rejection(error))
        return self.coordinator.accept_update(header, payloads, nbytes)

    async def GetRunStatus(self, request, context: aio.ServicerContext) -> pb.RunStatus:
        self._require_ready()
        return self.coordinator.status(request.run_id)

    async def StartRun(self, request, context: aio.ServicerContext) -> pb.RunStatus:
        self._require_ready()
        if not request.HasField("config"):
            raise ValidationError("config", "is required")
        return await self.coordinator.start_run(request.config)

    async def StopRun(self, request, context: aio.ServicerContext) -> pb.RunStatus:
        self._require_ready()
        return await self.coordinator.stop_run(request.run_id, request.reason)


def _as_rejection(problem: Exception) -> UpdateRejectedError:
    if isinstance(problem, UpdateRejectedError):
        return problem
    return UpdateRejectedError(str(problem))
