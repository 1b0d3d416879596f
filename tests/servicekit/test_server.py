"""The service kit over real gRPC on loopback: health, reflection, errors, metrics, limits."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from probe_service import SERVICE_NAME, probe_definition

from trillium.common.v1 import errors_pb2
from trillium.inference.v1 import inference_pb2, inference_pb2_grpc
from trillium.servicekit.background import BackgroundService
from trillium.servicekit.client import open_sync_channel
from trillium.servicekit.errors import ERROR_DETAIL_METADATA_KEY
from trillium.servicekit.probes import health_status, metric_value, reflected_services, scrape_metrics
from trillium.servicekit.settings import ServiceSettings


@pytest.fixture(scope="module")
def service():
    with BackgroundService(probe_definition()) as running:
        running.wait_ready()
        yield running


@pytest.fixture
def stub(service):
    with open_sync_channel(service.target) as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)


def error_detail(error: grpc.RpcError) -> errors_pb2.ErrorDetail:
    for key, value in error.trailing_metadata() or ():
        if key == ERROR_DETAIL_METADATA_KEY:
            return errors_pb2.ErrorDetail.FromString(value)
    raise AssertionError("no error detail in trailing metadata")


def test_health_reports_overall_and_per_service(service):
    assert health_status(service.target) == "SERVING"
    assert health_status(service.target, SERVICE_NAME) == "SERVING"
    with pytest.raises(grpc.RpcError) as info:
        health_status(service.target, "no.such.Service")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_service_is_not_serving_until_warmup_finishes():
    gate = asyncio.Event()  # binds to the service loop on first wait (Python >= 3.10)
    settings = ServiceSettings(port=0, metrics_port=-1, drain_seconds=0, grace_seconds=1)
    with BackgroundService(probe_definition(gate), settings) as running:
        assert health_status(running.target) == "SERVING"
        assert health_status(running.target, SERVICE_NAME) == "NOT_SERVING"
        running.loop.call_soon_threadsafe(gate.set)
        running.wait_ready()
        assert health_status(running.target, SERVICE_NAME) == "SERVING"


def test_reflection_lists_the_service_health_and_reflection(service):
    names = reflected_services(service.target)
    assert SERVICE_NAME in names
    assert "grpc.health.v1.Health" in names
    assert "grpc.reflection.v1alpha.ServerReflection" in names


def test_validation_error_becomes_invalid_argument_naming_the_field(stub):
    with pytest.raises(grpc.RpcError) as info:
        stub.GetSession(inference_pb2.GetSessionRequest(session_id=""))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("session_id:")
    detail = error_detail(info.value)
    assert detail.field == "session_id"
    assert detail.code == "INVALID_ARGUMENT"
    assert detail.request_id


def test_not_found_and_request_id_round_trip(stub):
    with pytest.raises(grpc.RpcError) as info:
        stub.GetSession(
            inference_pb2.GetSessionRequest(session_id="abc"), metadata=[("x-request-id", "req-42")]
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_detail(info.value).request_id == "req-42"
    _, call = stub.ListModels.with_call(
        inference_pb2.ListModelsRequest(), metadata=[("x-request-id", "req-43")]
    )
    assert ("x-request-id", "req-43") in tuple(call.trailing_metadata())


def test_unexpected_exception_is_internal_and_server_stays_up(stub):
    with pytest.raises(grpc.RpcError) as info:
        stub.GetSession(inference_pb2.GetSessionRequest(session_id="crash"))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "request id" in info.value.details()
    assert stub.ListModels(inference_pb2.ListModelsRequest()).models[0].name == "probe"


def test_error_in_the_middle_of_a_stream_keeps_sent_messages_and_names_the_field(stub):
    request = inference_pb2.GenerateRequest(model="fail-midway", generation={"max_new_tokens": 5})
    received = []
    with pytest.raises(grpc.RpcError) as info:
        for response in stub.Generate(request):
            received.append(response.delta.index)
    assert received == [0, 1]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "generation.max_new_tokens" in info.value.details()


def test_metrics_count_rpcs_by_code_and_messages(service, stub):
    def scrape() -> str:
        return scrape_metrics(service.settings.host, service.runtime.metrics_port)

    labels = {"grpc_service": SERVICE_NAME, "grpc_method": "GetSession", "grpc_code": "INVALID_ARGUMENT"}
    before = metric_value(scrape(), "grpc_server_handled_total", labels)
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            stub.GetSession(inference_pb2.GetSessionRequest(session_id=""))
    sent_labels = {"grpc_method": "Generate", "grpc_type": "server_stream"}
    sent_before = metric_value(scrape(), "grpc_server_msg_sent_total", sent_labels)
    list(stub.Generate(inference_pb2.GenerateRequest(generation={"max_new_tokens": 4})))
    text = scrape()
    assert metric_value(text, "grpc_server_handled_total", labels) == before + 3
    assert metric_value(text, "grpc_server_msg_sent_total", sent_labels) == sent_before + 4
    assert metric_value(text, "grpc_server_handling_seconds_count", {"grpc_method": "GetSession"}) >= 3
    assert metric_value(text, "trillium_build_info", {"service": "probe", "version": "0.0.0"}) == 1


def test_message_size_limit_is_enforced(service):
    settings = ServiceSettings(port=0, metrics_port=-1, max_message_bytes=64 * 1024, drain_seconds=0)
    with BackgroundService(probe_definition(), settings) as small:
        small.wait_ready()
        with open_sync_channel(small.target) as channel:
            small_stub = inference_pb2_grpc.InferenceServiceStub(channel)
            big = inference_pb2.GenerateRequest(segments=[inference_pb2.Segment(text="x" * 100_000)])
            with pytest.raises(grpc.RpcError) as info:
                list(small_stub.Generate(big))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert small_stub.ListModels(inference_pb2.ListModelsRequest()).models
