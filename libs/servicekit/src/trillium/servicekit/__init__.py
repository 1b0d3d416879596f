"""Trillium's service kit: everything a gRPC service needs that is not its domain.

``ServiceDefinition`` + ``ServiceRuntime`` (``server``) bootstrap a ``grpc.aio`` server with health,
reflection, interceptors (request id, Prometheus metrics, bearer-token auth, error mapping), optional
TLS/mTLS, a ``/metrics`` endpoint, a Redis ``SessionStore`` and SIGTERM drain; ``ServiceSettings``
reads the environment and flags; ``errors`` holds the typed errors handlers raise.
"""

from trillium.servicekit.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    NotFoundError,
    ResourceExhaustedError,
    ServiceError,
    UnavailableError,
    ValidationError,
)
from trillium.servicekit.redis_store import SessionStore, StoreUnavailableError
from trillium.servicekit.server import ServiceDefinition, ServiceRuntime, serve_until_signal
from trillium.servicekit.settings import ServiceSettings

__all__ = [
    "AlreadyExistsError",
    "FailedPreconditionError",
    "NotFoundError",
    "ResourceExhaustedError",
    "ServiceDefinition",
    "ServiceError",
    "ServiceRuntime",
    "ServiceSettings",
    "SessionStore",
    "StoreUnavailableError",
    "UnavailableError",
    "ValidationError",
    "serve_until_signal",
]
