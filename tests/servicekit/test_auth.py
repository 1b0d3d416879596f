"""Bearer-token auth over real gRPC: rejects missing and wrong tokens, accepts right ones."""

from __future__ import annotations

import grpc
import pytest
from probe_service import SERVICE_NAME, probe_definition

from trillium.inference.v1 import inference_pb2, inference_pb2_grpc
from trillium.servicekit.background import BackgroundService
from trillium.servicekit.client import bearer_metadata, open_sync_channel
from trillium.servicekit.probes import health_status, reflected_services
from trillium.servicekit.settings import ServiceSettings

ADMIN_METHOD = f"/{SERVICE_NAME}/DeleteSession"


@pytest.fixture(scope="module")
def secured():
    settings = ServiceSettings(
        port=0, metrics_port=-1, drain_seconds=0, auth_tokens=("client-token",), admin_tokens=("admin-token",)
    )
    with BackgroundService(probe_definition(admin_methods=[ADMIN_METHOD]), settings) as running:
        running.wait_ready()
        with open_sync_channel(running.target) as channel:
            yield running, inference_pb2_grpc.InferenceServiceStub(channel)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((), "authorization: missing"),
        ((("authorization", "client-token"),), "authorization: missing"),
        ((("authorization", "Bearer "),), "authorization: missing"),
        ((("authorization", "Bearer wrong"),), "authorization: invalid"),
        ((("authorization", "Bearer client-token-but-longer"),), "authorization: invalid"),
    ],
)
def test_missing_or_wrong_token_is_unauthenticated(secured, metadata, expected):
    _, stub = secured
    with pytest.raises(grpc.RpcError) as info:
        stub.ListModels(inference_pb2.ListModelsRequest(), metadata=metadata)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert info.value.details().startswith(expected)


def test_right_token_is_accepted(secured):
    _, stub = secured
    response = stub.ListModels(inference_pb2.ListModelsRequest(), metadata=bearer_metadata("client-token"))
    assert response.models[0].name == "probe"
    assert stub.ListModels(inference_pb2.ListModelsRequest(), metadata=bearer_metadata("admin-token")).models


def test_admin_method_needs_the_admin_token(secured):
    _, stub = secured
    with pytest.raises(grpc.RpcError) as info:
        stub.DeleteSession(
            inference_pb2.DeleteSessionRequest(session_id="s"), metadata=bearer_metadata("client-token")
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as info:
        stub.DeleteSession(
            inference_pb2.DeleteSessionRequest(session_id="s"), metadata=bearer_metadata("admin-token")
        )
    # Past auth, the probe does not implement DeleteSession.
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_streams_are_protected_too(secured):
    _, stub = secured
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(inference_pb2.GenerateRequest(generation={"max_new_tokens": 2})))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    ok = list(
        stub.Generate(
            inference_pb2.GenerateRequest(generation={"max_new_tokens": 2}),
            metadata=bearer_metadata("client-token"),
        )
    )
    assert [r.delta.index for r in ok] == [0, 1]


def test_health_and_reflection_need_no_token(secured):
    running, _ = secured
    assert health_status(running.target, SERVICE_NAME) == "SERVING"
    assert SERVICE_NAME in reflected_services(running.target)
