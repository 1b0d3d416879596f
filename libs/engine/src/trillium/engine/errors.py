"""Errors the engine raises before any model work, or delivers as a request's last event.

Each names the limit and the numbers involved, so that an API layer can map it to a status
(INVALID_ARGUMENT for :class:`RequestRejectedError`, RESOURCE_EXHAUSTED for :class:`CapacityExceededError`)
and the message alone tells the client what to change.
"""

from __future__ import annotations

__all__ = ["CapacityExceededError", "EngineError", "RequestFailedError", "RequestRejectedError"]


class EngineError(Exception):
    """Base class; ``field`` names the request field or engine limit at fault."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class RequestRejectedError(EngineError, ValueError):
    """The request can never run as given (prompt longer than the context, too many new tokens)."""


class CapacityExceededError(EngineError):
    """The engine is full: queue length, queue time, or a request larger than the whole KV budget.

    ``limit`` is the engine setting that was reached (``max_queued_requests``,
    ``max_queue_seconds``, ``kv_cache_bytes``)."""

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message, field=limit)
        self.limit = limit


class RequestFailedError(EngineError):
    """The model or the policy failed on this request while it ran (other requests go on)."""
