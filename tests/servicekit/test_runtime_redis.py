"""The runtime's Redis session store over real gRPC: embedded default, external URL, outages."""

from __future__ import annotations

import grpc
import pytest
import redis
from probe_service import SERVICE_NAME, probe_definition

from trillium.inference.v1 import inference_pb2, inference_pb2_grpc
from trillium.servicekit.background import BackgroundService
from trillium.servicekit.client import open_sync_channel
from trillium.servicekit.probes import health_status, metric_value, scrape_metrics
from trillium.servicekit.redis_store import RedisClientSettings
from trillium.servicekit.settings import ServiceSettings
from trillium.servicekit.testing import RedisServer


def settings(**overrides) -> ServiceSettings:
    return ServiceSettings(port=0, metrics_port=0, drain_seconds=0, grace_seconds=1, **overrides)


def delete_session(target: str, session_id: str) -> inference_pb2.DeleteSessionResponse:
    with open_sync_channel(target) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        return stub.DeleteSession(inference_pb2.DeleteSessionRequest(session_id=session_id), timeout=10)


def test_embedded_redis_starts_when_no_url_is_configured():
    with BackgroundService(probe_definition(session_namespace="probe"), settings()) as service:
        service.wait_ready()
        embedded = service.runtime.embedded_redis
        assert embedded is not None and embedded.running
        client = redis.Redis.from_url(embedded.url)
        client.hset("trillium:probe:v1:{s:abc}:meta", mapping={"schema": "1", "model": "m"})
        assert delete_session(service.target, "abc").deleted
        assert client.exists("trillium:probe:v1:{s:abc}:meta") == 0
        text = scrape_metrics("127.0.0.1", service.runtime.metrics_port)
        assert metric_value(text, "probe_redis_ops_total", {"op": "delete"}) >= 1
    assert not embedded.running  # stopped with the service


def test_external_redis_outage_is_unavailable_then_recovers():
    with (
        RedisServer() as server,
        BackgroundService(probe_definition(session_namespace="probe"), settings(redis_url=server.url)) as svc,
    ):
        svc.wait_ready()
        assert svc.runtime.embedded_redis is None
        # Fail fast while Redis is down (the default settings retry for longer).
        default_store = svc.runtime.sessions
        svc.runtime.sessions = svc.call(_fast_failing_store(server.url))
        svc.call(default_store.close())
        assert delete_session(svc.target, "gone").deleted is False
        server.stop()
        with pytest.raises(grpc.RpcError) as info:
            delete_session(svc.target, "gone")
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert health_status(svc.target, SERVICE_NAME) == "SERVING"  # the server stays up
        server.start()
        assert delete_session(svc.target, "gone").deleted is False


async def _fast_failing_store(url: str):
    from trillium.servicekit.redis_store import SessionStore

    fast = RedisClientSettings(
        op_timeout_seconds=1.5, socket_timeout_seconds=0.5, connect_timeout_seconds=0.3
    )
    return SessionStore(url, "probe", settings=fast)


def test_service_waits_for_redis_before_serving():
    with RedisServer() as server:
        url = server.url
        server.stop()
        with BackgroundService(probe_definition(session_namespace="probe"), settings(redis_url=url)) as svc:
            assert health_status(svc.target, SERVICE_NAME) == "NOT_SERVING"
            server.start()
            svc.wait_ready(timeout=30)
            assert health_status(svc.target, SERVICE_NAME) == "SERVING"
