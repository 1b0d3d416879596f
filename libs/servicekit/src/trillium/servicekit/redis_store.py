"""Session store over redis-py asyncio: versioned hash-tagged keys, sliding TTL, typed failures.

Key schema (platform conventions, "Redis key schema and TTL"; our design choice, informed by what
LMCache, llm-d and Mooncake store):

    trillium:<namespace>:v1:{s:<session_id>}:meta        HASH  session metadata + ``schema=1``
    trillium:<namespace>:v1:{s:<session_id>}:transcript  LIST  turns, to rebuild a cache after a restart
    trillium:<namespace>:v1:{s:<session_id>}:blocks      LIST  chunk hashes (only if KV is offloaded)

* Every key is versioned (``v1``) and the meta hash carries ``schema``: a record written under
  another schema is a **miss**, never a wrong hit.
* The hash tag ``{s:<id>}`` keeps a session's keys in one cluster slot, so one MULTI covers them.
* **Sliding TTL**: every write and every read (a "touch") re-sets ``EXPIRE`` on *all* keys of the
  session in the same MULTI, so a session expires as a whole after ``ttl_seconds`` idle. Keys
  without a TTL never exist, which is what the server's ``maxmemory-policy volatile-lru`` needs.
* **Metadata only**: KV bytes stay in GPU/CPU memory.

Failure model: a bounded connection pool (callers wait for a free connection, bounded by the call
budget); socket and connect timeouts; redis-py's ``Retry`` with exponential backoff and equal
jitter on ``ConnectionError``/``TimeoutError`` — each retry drops the broken connection and dials
again, which is how the store recovers after a Redis restart. The whole call, retries included,
runs under one budget: ``min(timeout, op_timeout_seconds)``, where ``timeout`` is what the caller
derives from its gRPC deadline. Whatever goes wrong surfaces as :class:`StoreUnavailableError`
(a servicekit ``UnavailableError``: gRPC UNAVAILABLE), never a raw redis exception.

A retried ``RPUSH`` whose reply was lost may be applied twice (redis-py cannot tell whether the
server executed it), so :meth:`SessionStore.append_transcript` is at-least-once under failures.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import RedisError

from trillium.servicekit.errors import UnavailableError, ValidationError

SCHEMA_VERSION = 1
SESSION_KEY_KINDS = ("meta", "transcript", "blocks")
MAX_SESSION_ID_LENGTH = 128
DEFAULT_TTL_SECONDS = 1800
# Redis operations are sub-millisecond to sub-second; SLO edges must be bucket boundaries.
OP_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)

_SCHEMA_FIELD = "schema"
_CREATED_AT_FIELD = "created_at"
_LAST_ACCESS_FIELD = "last_access"
_RESERVED_FIELDS = frozenset({_SCHEMA_FIELD, _CREATED_AT_FIELD, _LAST_ACCESS_FIELD})
# No braces (they would break the hash tag), no whitespace, no colon (the key separator).
_SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_.\-]+")
_NAMESPACE_PATTERN = re.compile(r"[a-z][a-z0-9_\-]*")

T = TypeVar("T")
MetaValue = str | int | float
OpObserver = Callable[[str, str, float], None]


class StoreUnavailableError(UnavailableError):
    """Redis could not serve a store call (down, unreachable, erroring) after retries."""


class StoreTimeoutError(StoreUnavailableError):
    """A store call ran out of its time budget (the caller's deadline or ``op_timeout_seconds``)."""


class _Labeled(Protocol):
    def labels(self, *args: str, **kwargs: str) -> Any: ...


@dataclass(frozen=True)
class RedisClientSettings:
    """Connection-pool, timeout and retry knobs of the store's redis-py asyncio client.

    ``op_timeout_seconds`` caps one store call including retries, backoff and waiting for a pooled
    connection; a per-call ``timeout`` can only shorten it. Backoff after failure ``n`` is drawn
    uniformly from ``[c/2, c]`` with ``c = min(backoff_cap, backoff_base * 2**n)`` (exponential with
    equal jitter, redis-py's ``EqualJitterBackoff``), so replicas do not retry in lockstep.
    """

    max_connections: int = 16
    socket_timeout_seconds: float = 1.0
    connect_timeout_seconds: float = 0.5
    op_timeout_seconds: float = 2.0
    retries: int = 3
    backoff_base_seconds: float = 0.025
    backoff_cap_seconds: float = 0.5
    health_check_interval_seconds: int = 15

    def __post_init__(self) -> None:
        positive = {
            "max_connections": self.max_connections,
            "socket_timeout_seconds": self.socket_timeout_seconds,
            "connect_timeout_seconds": self.connect_timeout_seconds,
            "op_timeout_seconds": self.op_timeout_seconds,
            "backoff_base_seconds": self.backoff_base_seconds,
            "backoff_cap_seconds": self.backoff_cap_seconds,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.health_check_interval_seconds < 0:
            raise ValueError(
                f"health_check_interval_seconds must be >= 0, got {self.health_check_interval_seconds}"
            )


@dataclass(frozen=True)
class StoreMetrics:
    """The store's Prometheus objects: ``ops_total{op,result}`` and ``op_seconds{op}``."""

    ops_total: Counter
    op_seconds: Histogram


def create_store_metrics(prefix: str, registry: CollectorRegistry) -> StoreMetrics:
    """Create ``<prefix>_redis_ops_total{op,result}`` and ``<prefix>_redis_op_seconds{op}`` in ``registry``.

    The service calls this once (e.g. ``prefix="inference"``) and hands the objects to
    :class:`SessionStore`; the store itself never touches a global registry.
    """
    return StoreMetrics(
        ops_total=Counter(
            f"{prefix}_redis_ops",
            "Redis session-store operations by result.",
            ("op", "result"),
            registry=registry,
        ),
        op_seconds=Histogram(
            f"{prefix}_redis_op_seconds",
            "Duration of Redis session-store operations, retries included.",
            ("op",),
            buckets=OP_SECONDS_BUCKETS,
            registry=registry,
        ),
    )


def validate_session_id(session_id: object, max_length: int = MAX_SESSION_ID_LENGTH) -> str:
    """Return ``session_id`` if it is a non-empty string of ``[A-Za-z0-9_.-]`` up to ``max_length``."""
    if not isinstance(session_id, str) or not session_id:
        raise ValidationError("session_id", f"session_id must be a non-empty string, got {session_id!r}")
    if len(session_id) > max_length:
        raise ValidationError(
            "session_id", f"session_id must be at most {max_length} characters, got {len(session_id)}"
        )
    if not _SESSION_ID_PATTERN.fullmatch(session_id):
        raise ValidationError("session_id", "session_id may contain only letters, digits, '_', '.' and '-'")
    return session_id


def session_key(namespace: str, session_id: str, kind: str) -> str:
    """``trillium:<namespace>:v1:{s:<session_id>}:<kind>`` (inputs assumed validated)."""
    return f"trillium:{namespace}:v{SCHEMA_VERSION}:{{s:{session_id}}}:{kind}"


def _encode_meta(mapping: Mapping[str, MetaValue]) -> dict[str, str]:
    if not isinstance(mapping, Mapping):
        raise ValidationError(
            "mapping", f"mapping must be a mapping of field -> value, got {type(mapping).__name__}"
        )
    encoded: dict[str, str] = {}
    for field, value in mapping.items():
        if not isinstance(field, str) or not field:
            raise ValidationError("mapping", f"mapping field names must be non-empty strings, got {field!r}")
        if field in _RESERVED_FIELDS:
            raise ValidationError("mapping", f"mapping field {field!r} is managed by the store")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValidationError(
                "mapping", f"mapping value of {field!r} must be str, int or float, got {value!r}"
            )
        encoded[field] = str(value)
    return encoded


def _decode_meta(raw: Mapping[bytes, bytes]) -> dict[str, str] | None:
    """Decoded meta hash without ``schema``, or None for a missing or foreign-schema record."""
    meta = {key.decode(errors="replace"): value.decode(errors="replace") for key, value in raw.items()}
    if meta.pop(_SCHEMA_FIELD, None) != str(SCHEMA_VERSION):
        return None
    return meta


class SessionStore:
    """Async per-session metadata and transcript store in Redis with a sliding TTL.

    ``url``: ``redis://``, ``rediss://`` or ``unix://``. ``namespace``: the service, e.g.
    ``"inference"``. Every method takes an optional ``timeout`` (seconds left on the caller's gRPC
    deadline); bad arguments raise ``ValidationError`` (a ``ValueError``) naming the argument, Redis
    trouble raises :class:`StoreUnavailableError`.

    Metrics: pass ``ops_total``/``op_seconds`` (e.g. from :func:`create_store_metrics`) and/or an
    ``on_op(op, result, seconds)`` callback. ``result`` is ``hit``/``miss`` for reads of meta,
    ``ok`` for other successes, ``error`` or ``timeout`` for failures.
    """

    def __init__(
        self,
        url: str,
        namespace: str,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        *,
        settings: RedisClientSettings | None = None,
        ops_total: _Labeled | None = None,
        op_seconds: _Labeled | None = None,
        on_op: OpObserver | None = None,
        max_session_id_length: int = MAX_SESSION_ID_LENGTH,
    ) -> None:
        if not isinstance(namespace, str) or not _NAMESPACE_PATTERN.fullmatch(namespace):
            raise ValueError(f"namespace must match [a-z][a-z0-9_-]*, got {namespace!r}")
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds < 1:
            raise ValueError(f"ttl_seconds must be an integer >= 1, got {ttl_seconds!r}")
        if max_session_id_length < 1:
            raise ValueError(f"max_session_id_length must be >= 1, got {max_session_id_length}")
        self.namespace = namespace
        self.ttl_seconds = ttl_seconds
        self.settings = settings or RedisClientSettings()
        self.max_session_id_length = max_session_id_length
        self._ops_total = ops_total
        self._op_seconds = op_seconds
        self._on_op = on_op
        self._pool = self._create_pool(url, self.settings)
        self._client = Redis(connection_pool=self._pool)

    @staticmethod
    def _create_pool(url: str, settings: RedisClientSettings) -> BlockingConnectionPool:
        retry = Retry(
            EqualJitterBackoff(settings.backoff_cap_seconds, settings.backoff_base_seconds), settings.retries
        )
        try:
            return BlockingConnectionPool.from_url(
                url,
                max_connections=settings.max_connections,
                timeout=settings.op_timeout_seconds,
                socket_timeout=settings.socket_timeout_seconds,
                socket_connect_timeout=settings.connect_timeout_seconds,
                socket_keepalive=True,
                retry=retry,
                health_check_interval=settings.health_check_interval_seconds,
            )
        except ValueError as error:
            raise ValueError(f"url is not a valid Redis URL: {error}") from error

    # ----------------------------------------------------------------- keys

    def key(self, session_id: str, kind: str) -> str:
        """The Redis key of one part (``meta``, ``transcript``, ``blocks``) of a session."""
        if kind not in SESSION_KEY_KINDS:
            raise ValueError(f"kind must be one of {SESSION_KEY_KINDS}, got {kind!r}")
        return session_key(self.namespace, validate_session_id(session_id, self.max_session_id_length), kind)

    def session_keys(self, session_id: str) -> tuple[str, ...]:
        """All keys of a session, in ``SESSION_KEY_KINDS`` order."""
        return tuple(self.key(session_id, kind) for kind in SESSION_KEY_KINDS)

    # ----------------------------------------------------------- operations

    async def put_meta(
        self,
        session_id: str,
        mapping: Mapping[str, MetaValue],
        *,
        replace: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Write metadata fields (merged into the hash; ``replace=True`` drops old fields first).

        Adds ``schema``, ``last_access`` (unix seconds) and, once, ``created_at``; slides the TTL of
        all the session's keys in the same MULTI.
        """
        keys = self.session_keys(session_id)
        now = f"{time.time():.3f}"
        fields = {**_encode_meta(mapping), _SCHEMA_FIELD: str(SCHEMA_VERSION), _LAST_ACCESS_FIELD: now}

        async def action() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                if replace:
                    pipe.delete(keys[0])
                pipe.hset(keys[0], mapping=fields)
                pipe.hsetnx(keys[0], _CREATED_AT_FIELD, now)
                self._queue_expire(pipe, keys)
                await pipe.execute()

        await self._run("put_meta", timeout, action)

    async def get_meta(self, session_id: str, *, timeout: float | None = None) -> dict[str, str] | None:
        """The session's metadata (values as strings, without ``schema``), or None on a miss.

        A record written under another schema version is a miss. Reading slides the TTL.
        """
        keys = self.session_keys(session_id)

        async def action() -> dict[str, str] | None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hgetall(keys[0])
                self._queue_expire(pipe, keys)
                raw, *_ = await pipe.execute()
            return _decode_meta(raw)

        return await self._run("get_meta", timeout, action, lambda meta: "miss" if meta is None else "hit")

    async def append_transcript(
        self, session_id: str, turn: str | bytes, *, timeout: float | None = None
    ) -> int:
        """Append one turn to the transcript; returns the new number of turns. Slides the TTL."""
        keys = self.session_keys(session_id)
        if not isinstance(turn, str | bytes):
            raise ValidationError("turn", f"turn must be str or bytes, got {type(turn).__name__}")

        async def action() -> int:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.rpush(keys[1], turn)
                self._queue_expire(pipe, keys)
                length, *_ = await pipe.execute()
            return int(length)

        return await self._run("append_transcript", timeout, action)

    async def get_transcript(self, session_id: str, *, timeout: float | None = None) -> list[bytes]:
        """All turns in order, as bytes (``str`` turns come back UTF-8 encoded). Slides the TTL."""
        keys = self.session_keys(session_id)

        async def action() -> list[bytes]:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.lrange(keys[1], 0, -1)
                self._queue_expire(pipe, keys)
                turns, *_ = await pipe.execute()
            return list(turns)

        return await self._run("get_transcript", timeout, action)

    async def touch(self, session_id: str, *, timeout: float | None = None) -> bool:
        """Slide the TTL of all the session's keys; True if any of them exists."""
        keys = self.session_keys(session_id)

        async def action() -> bool:
            async with self._client.pipeline(transaction=True) as pipe:
                self._queue_expire(pipe, keys)
                return any(await pipe.execute())

        return await self._run("touch", timeout, action)

    async def delete(self, session_id: str, *, timeout: float | None = None) -> bool:
        """Remove every key of the session; True if anything was removed."""
        keys = self.session_keys(session_id)

        async def action() -> bool:
            return int(await self._client.delete(*keys)) > 0

        return await self._run("delete", timeout, action)

    async def exists(self, session_id: str, *, timeout: float | None = None) -> bool:
        """True if the session has metadata of the current schema. Does not slide the TTL."""
        keys = self.session_keys(session_id)

        async def action() -> bool:
            return await self._client.hget(keys[0], _SCHEMA_FIELD) == str(SCHEMA_VERSION).encode()

        return await self._run("exists", timeout, action)

    async def ping(self, *, timeout: float | None = None) -> bool:
        """True if Redis answers (raises :class:`StoreUnavailableError` otherwise)."""

        async def action() -> bool:
            return bool(await self._client.ping())

        return await self._run("ping", timeout, action)

    async def close(self) -> None:
        """Close the client and every pooled connection."""
        await self._client.aclose()
        await self._pool.aclose()

    async def __aenter__(self) -> SessionStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------ internals

    def _queue_expire(self, pipe: Any, keys: tuple[str, ...]) -> None:
        for key in keys:
            pipe.expire(key, self.ttl_seconds)

    def _budget(self, timeout: float | None) -> float:
        if timeout is None:
            return self.settings.op_timeout_seconds
        return min(float(timeout), self.settings.op_timeout_seconds)

    async def _run(
        self,
        op: str,
        timeout: float | None,
        action: Callable[[], Awaitable[T]],
        classify: Callable[[T], str] = lambda _: "ok",
    ) -> T:
        """Run ``action`` under the call budget, map failures to typed errors, record metrics."""
        budget = self._budget(timeout)
        start = time.perf_counter()
        try:
            if not budget > 0:
                raise TimeoutError(f"no time left (timeout={timeout})")
            async with asyncio.timeout(budget):
                result = await action()
        except TimeoutError as error:
            self._observe(op, "timeout", start)
            raise StoreTimeoutError(
                f"redis {op} did not finish within {budget:.3f} s", retry_after_seconds=1.0
            ) from error
        except (RedisError, OSError) as error:
            self._observe(op, "error", start)
            raise StoreUnavailableError(f"redis {op} failed: {error}", retry_after_seconds=1.0) from error
        self._observe(op, classify(result), start)
        return result

    def _observe(self, op: str, result: str, start: float) -> None:
        seconds = time.perf_counter() - start
        if self._ops_total is not None:
            self._ops_total.labels(op=op, result=result).inc()
        if self._op_seconds is not None:
            self._op_seconds.labels(op=op).observe(seconds)
        if self._on_op is not None:
            self._on_op(op, result, seconds)
