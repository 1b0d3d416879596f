"""The Redis session store against a real Redis server: key schema, sliding TTL, failures, metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator

import grpc
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from redis.crc import key_slot

from trillium.servicekit.errors import UnavailableError
from trillium.servicekit.redis_store import (
    MAX_SESSION_ID_LENGTH,
    RedisClientSettings,
    SessionStore,
    StoreTimeoutError,
    StoreUnavailableError,
    create_store_metrics,
    session_key,
    validate_session_id,
)
from trillium.servicekit.testing import RedisServer

# Small budgets keep failure tests short; they are far above a loopback round trip.
FAST_FAIL = RedisClientSettings(
    op_timeout_seconds=1.5, socket_timeout_seconds=0.5, connect_timeout_seconds=0.3, retries=2
)
HANG_GUARD_SECONDS = 15.0  # only catches a hang; never a timing assertion


def run(coroutine: Awaitable):
    return asyncio.run(coroutine)


@pytest.fixture(scope="module")
def shared_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def server(shared_server: RedisServer) -> RedisServer:
    redis.Redis.from_url(shared_server.url).flushall()
    return shared_server


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url)
    yield client
    client.close()


@pytest.fixture
def private_server() -> Iterator[RedisServer]:
    """A server this test alone may stop, restart or freeze."""
    with RedisServer() as server:
        yield server


async def with_store(url: str, body: Callable[[SessionStore], Awaitable], **kwargs):
    store = SessionStore(url, "inference", **kwargs)
    try:
        return await body(store)
    finally:
        await store.close()


# --------------------------------------------------------------------------- round trips


def test_meta_round_trip_merge_replace_and_delete(server):
    async def body(store: SessionStore):
        assert await store.get_meta("s1") is None
        assert not await store.exists("s1")
        await store.put_meta("s1", {"model": "tiny-qwen", "budget": 0.25, "kept_tokens": 512})
        first = await store.get_meta("s1")
        await store.put_meta("s1", {"next_position": 900})
        merged = await store.get_meta("s1")
        await store.put_meta("s1", {"policy": "acckv"}, replace=True)
        replaced = await store.get_meta("s1")
        exists = await store.exists("s1")
        deleted = await store.delete("s1")
        return first, merged, replaced, exists, deleted, await store.get_meta("s1"), await store.delete("s1")

    first, merged, replaced, exists, deleted, after, deleted_again = run(with_store(server.url, body))
    assert {k: first[k] for k in ("model", "budget", "kept_tokens")} == {
        "model": "tiny-qwen",
        "budget": "0.25",
        "kept_tokens": "512",
    }
    assert "schema" not in first
    assert float(first["created_at"]) == pytest.approx(time.time(), abs=60)
    assert merged["model"] == "tiny-qwen" and merged["next_position"] == "900"
    assert merged["created_at"] == first["created_at"]
    assert "model" not in replaced and replaced["policy"] == "acckv"
    assert exists and deleted and not deleted_again
    assert after is None


def test_transcript_keeps_order_and_bytes(server):
    turns = ["user: hi", b"\x00\xffbinary", "assistant: hello \u00e9"]

    async def body(store: SessionStore):
        lengths = [await store.append_transcript("chat.7", turn) for turn in turns]
        return lengths, await store.get_transcript("chat.7"), await store.get_transcript("unknown")

    lengths, transcript, empty = run(with_store(server.url, body))
    assert lengths == [1, 2, 3]
    assert transcript == [b"user: hi", b"\x00\xffbinary", "assistant: hello \u00e9".encode()]
    assert empty == []


def test_key_layout_is_versioned_and_hash_tagged(server, raw):
    async def body(store: SessionStore):
        await store.put_meta("abc-1", {"model": "m"})
        await store.append_transcript("abc-1", "turn")

    run(with_store(server.url, body))
    meta_key = b"trillium:inference:v1:{s:abc-1}:meta"
    transcript_key = b"trillium:inference:v1:{s:abc-1}:transcript"
    assert set(raw.keys("*")) == {meta_key, transcript_key}
    assert raw.type(meta_key) == b"hash" and raw.type(transcript_key) == b"list"
    assert raw.hget(meta_key, "schema") == b"1"
    assert raw.lrange(transcript_key, 0, -1) == [b"turn"]
    blocks_key = session_key("inference", "abc-1", "blocks").encode()
    assert len({key_slot(key) for key in (meta_key, transcript_key, blocks_key)}) == 1


def test_namespace_is_part_of_every_key(server, raw):
    async def body():
        async with SessionStore(server.url, "avatar") as avatar_store:
            await avatar_store.put_meta("same-id", {"who": "avatar"})
        async with SessionStore(server.url, "inference") as inference_store:
            return await inference_store.get_meta("same-id")

    assert run(body()) is None
    assert raw.keys("*") == [b"trillium:avatar:v1:{s:same-id}:meta"]


# -------------------------------------------------------------------------------- TTL


def test_every_write_sets_ttl_on_all_session_keys(server, raw):
    async def body(store: SessionStore):
        await store.put_meta("t1", {"model": "m"})
        await store.append_transcript("t1", "a")

    run(with_store(server.url, body, ttl_seconds=120))
    keys = raw.keys("*")
    assert len(keys) == 2
    for key in keys:
        assert 0 < raw.pttl(key) <= 120_000


@pytest.mark.parametrize("op", ["get_meta", "get_transcript", "touch", "put_meta", "append_transcript"])
def test_ttl_slides_on_every_access(server, raw, op):
    store_ttl = 300

    async def seed(store: SessionStore):
        await store.put_meta("slide", {"model": "m"})
        await store.append_transcript("slide", "a")

    run(with_store(server.url, seed, ttl_seconds=store_ttl))
    raw.rpush(session_key("inference", "slide", "blocks"), "h0")  # written by someone else, no TTL yet
    keys = raw.keys("*")
    assert len(keys) == 3
    for key in keys:
        raw.expire(key, 5)

    async def access(store: SessionStore):
        if op == "put_meta":
            return await store.put_meta("slide", {"x": 1})
        if op == "append_transcript":
            return await store.append_transcript("slide", "b")
        return await getattr(store, op)("slide")

    run(with_store(server.url, access, ttl_seconds=store_ttl))
    for key in keys:
        assert raw.ttl(key) > 5, key


def test_touch_reports_whether_the_session_exists(server):
    async def body(store: SessionStore):
        missing = await store.touch("nobody")
        await store.append_transcript("somebody", "x")
        return missing, await store.touch("somebody")

    assert run(with_store(server.url, body)) == (False, True)


def test_session_expires_as_a_whole_after_ttl(server, raw):
    async def seed(store: SessionStore):
        await store.put_meta("short", {"model": "m"})
        await store.append_transcript("short", "turn")

    run(with_store(server.url, seed, ttl_seconds=1))
    keys = raw.keys("*")
    assert len(keys) == 2
    deadline = time.monotonic() + 3.0
    while raw.exists(*keys) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert raw.exists(*keys) == 0

    async def read(store: SessionStore):
        return await store.get_meta("short"), await store.get_transcript("short"), await store.exists("short")

    assert run(with_store(server.url, read, ttl_seconds=1)) == (None, [], False)


# --------------------------------------------------------------------- schema and input


@pytest.mark.parametrize("stored_schema", [b"0", b"2", None])
def test_schema_mismatch_is_a_miss(server, raw, stored_schema):
    observed: list[tuple[str, str]] = []

    async def seed(store: SessionStore):
        await store.put_meta("old", {"model": "m"})

    run(with_store(server.url, seed))
    meta_key = session_key("inference", "old", "meta")
    if stored_schema is None:
        raw.hdel(meta_key, "schema")
    else:
        raw.hset(meta_key, "schema", stored_schema)

    async def read(store: SessionStore):
        return await store.get_meta("old"), await store.exists("old")

    meta, exists = run(
        with_store(server.url, read, on_op=lambda op, result, _s: observed.append((op, result)))
    )
    assert meta is None and not exists
    assert ("get_meta", "miss") in observed


BAD_SESSION_IDS = ["", "has space", "{brace}", "a:b", "slash/", "x" * (MAX_SESSION_ID_LENGTH + 1), 42, None]


@pytest.mark.parametrize("session_id", BAD_SESSION_IDS)
@pytest.mark.parametrize(
    "call",
    [
        lambda store, sid: store.put_meta(sid, {"a": 1}),
        lambda store, sid: store.get_meta(sid),
        lambda store, sid: store.append_transcript(sid, "t"),
        lambda store, sid: store.get_transcript(sid),
        lambda store, sid: store.touch(sid),
        lambda store, sid: store.delete(sid),
        lambda store, sid: store.exists(sid),
    ],
    ids=["put_meta", "get_meta", "append_transcript", "get_transcript", "touch", "delete", "exists"],
)
def test_invalid_session_id_raises_value_error_naming_it(server, raw, session_id, call):
    with pytest.raises(ValueError, match="session_id"):
        run(with_store(server.url, lambda store: call(store, session_id)))
    assert raw.dbsize() == 0


@pytest.mark.parametrize(
    "mapping",
    [
        {"schema": 2},
        {"created_at": 1},
        {"last_access": 1},
        {"flag": True},
        {"x": None},
        {"": "v"},
        ["not", "a", "map"],
    ],
)
def test_invalid_meta_raises_value_error_naming_it(server, raw, mapping):
    with pytest.raises(ValueError, match="mapping"):
        run(with_store(server.url, lambda store: store.put_meta("ok", mapping)))
    assert raw.dbsize() == 0


def test_invalid_turn_raises_value_error_naming_it(server):
    with pytest.raises(ValueError, match="turn"):
        run(with_store(server.url, lambda store: store.append_transcript("ok", 12)))


SESSION_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"


@given(st.text(alphabet=SESSION_ID_ALPHABET, min_size=1, max_size=MAX_SESSION_ID_LENGTH))
@settings(max_examples=50, deadline=None)
def test_valid_session_ids_map_to_one_slot(session_id):
    assert validate_session_id(session_id) == session_id
    keys = [session_key("inference", session_id, kind) for kind in ("meta", "transcript", "blocks")]
    assert all(key.startswith(f"trillium:inference:v1:{{s:{session_id}}}:") for key in keys)
    assert len({key_slot(key.encode()) for key in keys}) == 1


@given(st.text(min_size=1, max_size=20).filter(lambda s: any(c not in SESSION_ID_ALPHABET for c in s)))
@settings(max_examples=50, deadline=None)
def test_ids_with_other_characters_are_rejected(session_id):
    with pytest.raises(ValueError, match="session_id"):
        validate_session_id(session_id)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"namespace": "Bad Name"}, "namespace"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": 1.5}, "ttl_seconds"),
        ({"url": "http://localhost:6379"}, "url"),
    ],
)
def test_invalid_constructor_arguments_name_the_argument(kwargs, name):
    arguments = {"url": "redis://127.0.0.1:1/0", "namespace": "inference", **kwargs}
    with pytest.raises(ValueError, match=name):
        SessionStore(**arguments)


@pytest.mark.parametrize(
    "field",
    ["max_connections", "socket_timeout_seconds", "op_timeout_seconds", "retries", "backoff_base_seconds"],
)
def test_invalid_client_settings_name_the_field(field):
    with pytest.raises(ValueError, match=field):
        RedisClientSettings(**{field: -1})


# ------------------------------------------------------------------- failures and recovery


def test_store_reconnects_after_redis_restart(private_server):
    async def body(store: SessionStore):
        await store.put_meta("r", {"model": "m"})
        assert await store.get_meta("r") is not None
        old_pid = private_server.pid
        private_server.restart()
        assert private_server.pid != old_pid
        after_restart = await store.get_meta("r")  # data is gone (no persistence), but the call works
        await store.put_meta("r", {"model": "m2"})
        return after_restart, await store.get_meta("r")

    after_restart, rewritten = run(with_store(private_server.url, body, settings=FAST_FAIL))
    assert after_restart is None
    assert rewritten["model"] == "m2"


OPS = {
    "put_meta": lambda store: store.put_meta("down", {"a": 1}),
    "get_meta": lambda store: store.get_meta("down"),
    "append_transcript": lambda store: store.append_transcript("down", "t"),
    "get_transcript": lambda store: store.get_transcript("down"),
    "touch": lambda store: store.touch("down"),
    "delete": lambda store: store.delete("down"),
    "exists": lambda store: store.exists("down"),
    "ping": lambda store: store.ping(),
}


def test_server_down_raises_store_unavailable_then_recovers(private_server):
    results: list[tuple[str, str]] = []

    async def body(store: SessionStore):
        assert await store.ping()
        private_server.stop()
        errors = {}
        for name, call in OPS.items():
            try:
                await asyncio.wait_for(call(store), HANG_GUARD_SECONDS)
            except StoreUnavailableError as error:
                errors[name] = error
        private_server.start()
        return errors, await store.ping()

    errors, recovered = run(
        with_store(
            private_server.url, body, settings=FAST_FAIL, on_op=lambda op, r, _s: results.append((op, r))
        )
    )
    assert set(errors) == set(OPS)
    for error in errors.values():
        assert not isinstance(error, redis.RedisError)
        assert isinstance(error.__cause__, redis.ConnectionError)
        assert isinstance(error, UnavailableError) and error.code == grpc.StatusCode.UNAVAILABLE
    assert recovered
    assert [result for op, result in results if op != "ping"] == ["error"] * (len(OPS) - 1)


def test_hung_server_hits_the_per_call_timeout(private_server):
    async def body(store: SessionStore):
        await store.put_meta("h", {"a": 1})
        private_server.pause()
        try:
            with pytest.raises(StoreTimeoutError):
                await asyncio.wait_for(store.get_meta("h", timeout=0.3), HANG_GUARD_SECONDS)
            with pytest.raises(StoreTimeoutError):  # no per-call timeout: op_timeout_seconds applies
                await asyncio.wait_for(store.touch("h"), HANG_GUARD_SECONDS)
        finally:
            private_server.resume()
        return await store.get_meta("h")

    assert run(with_store(private_server.url, body, settings=FAST_FAIL))["a"] == "1"


@pytest.mark.parametrize("timeout", [0.0, -1.0])
def test_exhausted_deadline_fails_fast_without_touching_redis(server, raw, timeout):
    with pytest.raises(StoreTimeoutError):
        run(with_store(server.url, lambda store: store.put_meta("late", {"a": 1}, timeout=timeout)))
    assert raw.dbsize() == 0


# --------------------------------------------------------------- concurrency and metrics


def test_fifty_concurrent_sessions_all_land_through_a_bounded_pool(server, raw):
    pool_size = 4

    async def one_session(store: SessionStore, index: int) -> None:
        session_id = f"c{index}"
        await store.put_meta(session_id, {"index": index})
        for turn in range(3):
            await store.append_transcript(session_id, f"{index}:{turn}")

    async def body(store: SessionStore):
        await asyncio.gather(*(one_session(store, i) for i in range(50)))
        return int(raw.info("clients")["connected_clients"])

    connected = run(with_store(server.url, body, settings=RedisClientSettings(max_connections=pool_size)))
    assert connected <= pool_size + 1  # + the raw test client
    for i in range(50):
        assert raw.hget(session_key("inference", f"c{i}", "meta"), "index") == str(i).encode()
        transcript = raw.lrange(session_key("inference", f"c{i}", "transcript"), 0, -1)
        assert transcript == [f"{i}:{t}".encode() for t in range(3)]


def test_prometheus_metrics_count_hits_misses_and_errors(private_server):
    registry = CollectorRegistry()
    metrics = create_store_metrics("inference", registry)

    async def body(store: SessionStore):
        await store.put_meta("m", {"a": 1})
        await store.get_meta("m")
        await store.get_meta("absent")
        private_server.stop()
        with pytest.raises(StoreUnavailableError):
            await store.get_meta("m")

    run(
        with_store(
            private_server.url,
            body,
            settings=FAST_FAIL,
            ops_total=metrics.ops_total,
            op_seconds=metrics.op_seconds,
        )
    )

    def count(op: str, result: str) -> float | None:
        return registry.get_sample_value("inference_redis_ops_total", {"op": op, "result": result})

    assert count("put_meta", "ok") == 1
    assert count("get_meta", "hit") == 1
    assert count("get_meta", "miss") == 1
    assert count("get_meta", "error") == 1
    assert registry.get_sample_value("inference_redis_op_seconds_count", {"op": "get_meta"}) == 3
