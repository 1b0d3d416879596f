"""Server interceptors: request ids, Prometheus metrics, bearer-token auth and error mapping.

A ``grpc.aio.ServerInterceptor`` only sees the method name and metadata, so each interceptor here
wraps the behaviour of the handler it is given (unary or streaming, both directions) in an async
*scope* entered around the whole RPC — the approach of OpenTelemetry's aio server instrumentation.
A scope may abort on entry (auth), observe the outcome on exit (metrics) or turn an exception into a
status (error mapping). Interceptors run outermost first in the order given to the server.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import grpc
from grpc import aio

from trillium.common.v1 import errors_pb2
from trillium.servicekit.errors import ERROR_DETAIL_METADATA_KEY, ServiceError
from trillium.servicekit.logs import request_id_var
from trillium.servicekit.metrics import GrpcServerMetrics

log = logging.getLogger(__name__)

REQUEST_ID_METADATA_KEY = "x-request-id"
_REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# Kubelet probes and grpcurl cannot present tokens; health and reflection reveal nothing private.
AUTH_EXEMPT_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


class RpcScope:
    """Per-RPC hooks a wrapper calls as messages flow; the base does nothing."""

    def received(self) -> None:
        """One request message was read."""

    def sent(self) -> None:
        """One response message was produced."""


ScopeFactory = Callable[[aio.ServicerContext], AbstractAsyncContextManager[RpcScope]]


async def _counted(requests: AsyncIterator[Any], scope: RpcScope) -> AsyncIterator[Any]:
    async for request in requests:
        scope.received()
        yield request


def _wrap_unary_response(
    inner: Callable[..., Awaitable[Any]], open_scope: ScopeFactory, streaming_request: bool
):
    async def behaviour(request: Any, context: aio.ServicerContext) -> Any:
        async with open_scope(context) as scope:
            if streaming_request:
                request = _counted(request, scope)
            else:
                scope.received()
            response = await inner(request, context)
            scope.sent()
            return response

    return behaviour


def _wrap_streaming_response(inner: Callable[..., Any], open_scope: ScopeFactory, streaming_request: bool):
    if not inspect.isasyncgenfunction(inner):
        # Handlers that write with ``context.write`` (e.g. grpc's own Health.Watch) return a coroutine.
        async def writer(request: Any, context: aio.ServicerContext) -> None:
            async with open_scope(context) as scope:
                request = _counted(request, scope) if streaming_request else request
                await inner(request, context)

        return writer

    async def generator(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        async with open_scope(context) as scope:
            if streaming_request:
                request = _counted(request, scope)
            else:
                scope.received()
            async for response in inner(request, context):
                scope.sent()
                yield response

    return generator


def wrap_rpc_handler(handler: grpc.RpcMethodHandler, open_scope: ScopeFactory) -> grpc.RpcMethodHandler:
    """A handler equal to ``handler`` whose behaviour runs inside ``open_scope(context)``."""
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary_response(handler.unary_unary, open_scope, False), **serializers
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_unary_response(handler.stream_unary, open_scope, True), **serializers
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_streaming_response(handler.unary_stream, open_scope, False), **serializers
        )
    return grpc.stream_stream_rpc_method_handler(
        _wrap_streaming_response(handler.stream_stream, open_scope, True), **serializers
    )


def rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def split_method(full_method: str) -> tuple[str, str]:
    """``"/pkg.Service/Method"`` -> ``("pkg.Service", "Method")``."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


def metadata_value(context: aio.ServicerContext, key: str) -> str | None:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


class _ScopedInterceptor(aio.ServerInterceptor):
    """Base: wraps every handler so ``scope(details, handler, context)`` surrounds the RPC."""

    def scope(
        self, details: grpc.HandlerCallDetails, handler: grpc.RpcMethodHandler, context: aio.ServicerContext
    ) -> AbstractAsyncContextManager[RpcScope]:
        raise TypeError(f"{type(self).__name__} must define scope()")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return wrap_rpc_handler(handler, lambda context: self.scope(handler_call_details, handler, context))


class RequestIdInterceptor(_ScopedInterceptor):
    """Adopts the caller's ``x-request-id`` (or makes one), exposes it to logs, and echoes it back."""

    @asynccontextmanager
    async def scope(self, details, handler, context):  # type: ignore[override]
        supplied = metadata_value(context, REQUEST_ID_METADATA_KEY)
        request_id = supplied if supplied and _REQUEST_ID_PATTERN.match(supplied) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        try:
            yield RpcScope()
            existing = tuple(context.trailing_metadata() or ())
            context.set_trailing_metadata((*existing, (REQUEST_ID_METADATA_KEY, request_id)))
        finally:
            request_id_var.reset(token)


class _MetricsScope(RpcScope):
    def __init__(self, metrics: GrpcServerMetrics, labels: tuple[str, str, str]) -> None:
        self.metrics, self.labels = metrics, labels

    def received(self) -> None:
        self.metrics.msg_received.labels(*self.labels).inc()

    def sent(self) -> None:
        self.metrics.msg_sent.labels(*self.labels).inc()


def _status_code_name(context: aio.ServicerContext, error: BaseException | None) -> str:
    if isinstance(error, asyncio.CancelledError) or (error is None and context.cancelled()):
        return "CANCELLED"
    code = context.code()
    if code is None:
        return "OK" if error is None else "UNKNOWN"
    if isinstance(code, grpc.StatusCode):
        return code.name
    return grpc.StatusCode(code).name if not isinstance(code, int) else _code_from_int(code)


def _code_from_int(value: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == value:
            return status.name
    return "UNKNOWN"


class MetricsInterceptor(_ScopedInterceptor):
    """Counts started/handled RPCs and messages, and times them (go-grpc-prometheus names)."""

    def __init__(self, metrics: GrpcServerMetrics) -> None:
        self.metrics = metrics

    @asynccontextmanager
    async def scope(self, details, handler, context):  # type: ignore[override]
        service, method = split_method(details.method)
        labels = (service, method, rpc_type(handler))
        self.metrics.started.labels(*labels).inc()
        start = time.perf_counter()
        error: BaseException | None = None
        try:
            yield _MetricsScope(self.metrics, labels)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.metrics.handling_seconds.labels(*labels).observe(time.perf_counter() - start)
            self.metrics.handled.labels(*labels, _status_code_name(context, error)).inc()


class BearerTokenAuthInterceptor(_ScopedInterceptor):
    """Requires ``authorization: Bearer <token>`` on every RPC except health and reflection.

    ``admin_methods`` (full method names) additionally require one of ``admin_tokens``.
    """

    def __init__(
        self,
        tokens: Collection[str],
        admin_tokens: Collection[str] = (),
        admin_methods: Collection[str] = (),
        exempt_prefixes: tuple[str, ...] = AUTH_EXEMPT_PREFIXES,
    ) -> None:
        if not tokens and not admin_tokens:
            raise ValueError("tokens: at least one token is needed to enable auth")
        self._tokens = tuple(t.encode() for t in (*tokens, *admin_tokens))
        self._admin_tokens = tuple(t.encode() for t in admin_tokens)
        self._admin_methods = frozenset(admin_methods)
        self._exempt_prefixes = exempt_prefixes

    @staticmethod
    def _matches(candidate: bytes, accepted: tuple[bytes, ...]) -> bool:
        # Compare against every token so timing does not reveal which one nearly matched.
        return any([hmac.compare_digest(candidate, token) for token in accepted])  # noqa: C419

    @asynccontextmanager
    async def scope(self, details, handler, context):  # type: ignore[override]
        if not details.method.startswith(self._exempt_prefixes):
            header = metadata_value(context, "authorization")
            if not header or not header.startswith("Bearer ") or not header[7:].strip():
                await context.abort(
                    grpc.StatusCode.UNAUTHENTICATED, "authorization: missing 'Bearer <token>' metadata"
                )
            token = header[7:].strip().encode()  # type: ignore[index]
            if not self._matches(token, self._tokens):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "authorization: invalid bearer token")
            if details.method in self._admin_methods and not self._matches(token, self._admin_tokens):
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED, "authorization: this method needs an admin token"
                )
        yield RpcScope()


def error_detail(code: grpc.StatusCode, message: str, field: str = "", retry_after: float = 0.0) -> bytes:
    return errors_pb2.ErrorDetail(
        code=code.name,
        field=field,
        message=message,
        request_id=request_id_var.get(),
        retry_after_seconds=retry_after,
    ).SerializeToString()


class ErrorMappingInterceptor(_ScopedInterceptor):
    """Turns ``ServiceError`` into its status (naming the field) and anything else into INTERNAL.

    ``NotImplementedError`` (raised by generated servicer base classes) becomes UNIMPLEMENTED and a
    ``TimeoutError`` DEADLINE_EXCEEDED.

    Every non-OK status carries a ``trillium.common.v1.ErrorDetail`` in ``trillium-error-bin``.
    """

    @asynccontextmanager
    async def scope(self, details, handler, context):  # type: ignore[override]
        try:
            yield RpcScope()
        except (aio.AbortError, asyncio.CancelledError, GeneratorExit):
            raise
        except ServiceError as exc:
            log.info("%s failed: %s %s", details.method, exc.code.name, exc.status_message())
            await context.abort(exc.code, exc.status_message(), self._trailer(exc.code, exc))
        except NotImplementedError:
            # Generated servicer base classes raise this for RPCs a service does not implement.
            message = f"{details.method} is not implemented by this server"
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                message,
                ((ERROR_DETAIL_METADATA_KEY, error_detail(grpc.StatusCode.UNIMPLEMENTED, message)),),
            )
        except TimeoutError as exc:
            log.warning("%s timed out: %s", details.method, exc)
            message = f"deadline exceeded while handling the request: {exc}"
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                message,
                ((ERROR_DETAIL_METADATA_KEY, error_detail(grpc.StatusCode.DEADLINE_EXCEEDED, message)),),
            )
        except Exception:
            log.exception("%s raised an unexpected error", details.method)
            message = f"internal error (request id {request_id_var.get() or 'unknown'})"
            await context.abort(
                grpc.StatusCode.INTERNAL,
                message,
                ((ERROR_DETAIL_METADATA_KEY, error_detail(grpc.StatusCode.INTERNAL, message)),),
            )

    @staticmethod
    def _trailer(code: grpc.StatusCode, exc: ServiceError) -> tuple[tuple[str, bytes | str], ...]:
        detail = error_detail(code, exc.message, exc.field, exc.retry_after_seconds)
        return ((ERROR_DETAIL_METADATA_KEY, detail), (REQUEST_ID_METADATA_KEY, request_id_var.get()))
