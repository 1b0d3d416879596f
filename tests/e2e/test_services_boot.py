"""Each service's console script starts, serves health, reflection and metrics, and stops on SIGTERM."""

from __future__ import annotations

import grpc
import pytest

from trillium.avatar.v1 import avatar_pb2, avatar_pb2_grpc
from trillium.federated.v1 import coordinator_pb2, coordinator_pb2_grpc
from trillium.inference.v1 import inference_pb2, inference_pb2_grpc
from trillium.servicekit.client import open_sync_channel
from trillium.servicekit.probes import (
    metric_value,
    reflected_services,
    scrape_metrics,
    wait_until_serving,
)
from trillium.servicekit.processes import ServiceProcess

SERVICES = {
    "trillium-inference": (
        "trillium.inference.v1.InferenceService",
        lambda ch: inference_pb2_grpc.InferenceServiceStub(ch).ListModels(inference_pb2.ListModelsRequest()),
    ),
    "trillium-avatar": (
        "trillium.avatar.v1.AvatarService",
        lambda ch: avatar_pb2_grpc.AvatarServiceStub(ch).ListAvatars(avatar_pb2.ListAvatarsRequest()),
    ),
    "trillium-coordinator": (
        "trillium.federated.v1.Coordinator",
        lambda ch: coordinator_pb2_grpc.CoordinatorStub(ch).GetRunStatus(
            coordinator_pb2.GetRunStatusRequest()
        ),
    ),
}


@pytest.mark.parametrize("command", sorted(SERVICES))
def test_service_boots_serves_and_drains(command):
    service_name, call = SERVICES[command]
    with ServiceProcess(command, ["--drain-seconds", "0"]) as service:
        wait_until_serving(service.target, service_name)
        assert service_name in reflected_services(service.target)
        with open_sync_channel(service.target) as channel:
            try:
                call(channel)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND)
        text = scrape_metrics("127.0.0.1", service.metrics_port)
        assert metric_value(text, "grpc_server_handled_total", {"grpc_service": service_name}) >= 1
        assert metric_value(text, "trillium_build_info") == 1
        assert service.terminate() == 0
