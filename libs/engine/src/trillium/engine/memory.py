"""KV-cache byte accounting: a budget, one reservation per request, a peak watermark.

Admission reserves bytes before a request's first prefill chunk runs and returns them the moment it
finishes, fails or is cancelled. The numbers are the bytes the request's tensors really hold (see
:mod:`trillium.engine.kv`), so the budget is a bound on the engine's KV memory, not an estimate.
Only the engine thread mutates a :class:`KVBudget`; readers (metrics) see plain ints.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["KVBudget", "KVShape", "default_kv_cache_bytes"]


@dataclass(frozen=True)
class KVShape:
    """The per-token KV geometry of a decoder: ``bytes_per_row`` is one key (or value) row of one
    KV head in one layer."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype_bytes: int

    @property
    def bytes_per_row(self) -> int:
        return self.head_dim * self.dtype_bytes

    @property
    def bytes_per_token(self) -> int:
        """Keys and values of one token over every layer and KV head (the full-cache cost)."""
        return 2 * self.num_layers * self.num_kv_heads * self.bytes_per_row

    def dense_bytes(self, tokens: int) -> int:
        """Bytes of a dense cache of ``tokens`` tokens in every layer."""
        return tokens * self.bytes_per_token

    def layer_bytes(self, rows: int) -> int:
        """Bytes of ``rows`` key rows and as many value rows (any heads, one layer)."""
        return 2 * rows * self.bytes_per_row


def default_kv_cache_bytes(available_bytes: int, fraction: float = 0.4) -> int:
    """The default budget: ``fraction`` of the memory available when the engine starts."""
    return max(int(available_bytes * fraction), 1)


@dataclass
class KVBudget:
    """``total`` bytes shared by the reservations ``{request id: bytes}``."""

    total: int
    reserved: dict[int, int] = field(default_factory=dict)
    used: int = 0
    peak: int = 0

    def __post_init__(self) -> None:
        if self.total < 1:
            raise ValueError(f"kv_cache_bytes must be >= 1, got {self.total}")

    @property
    def free(self) -> int:
        return self.total - self.used

    @property
    def usage_ratio(self) -> float:
        return self.used / self.total

    def fits(self, nbytes: int) -> bool:
        return nbytes <= self.free

    def reserve(self, request_id: int, nbytes: int) -> bool:
        """Reserve ``nbytes`` for a new request; False (nothing changed) when they do not fit."""
        if request_id in self.reserved:
            raise ValueError(f"request {request_id} already holds a reservation")
        if not self.fits(nbytes):
            return False
        self.reserved[request_id] = nbytes
        self._add(nbytes)
        return True

    def resize(self, request_id: int, nbytes: int) -> None:
        """Set a held reservation to ``nbytes`` (after compression it shrinks to the exact need).

        Growing past the budget is refused with ``ValueError``: the engine only grows a reservation
        it has checked, so that would be a bug, not a full budget."""
        delta = nbytes - self.reserved[request_id]
        if delta > self.free:
            raise ValueError(f"request {request_id} cannot grow by {delta} bytes: {self.free} free")
        self.reserved[request_id] = nbytes
        self._add(delta)

    def release(self, request_id: int) -> int:
        """Return a request's bytes (0 when it held none)."""
        nbytes = self.reserved.pop(request_id, 0)
        self.used -= nbytes
        return nbytes

    def _add(self, delta: int) -> None:
        self.used += delta
        self.peak = max(self.peak, self.used)
