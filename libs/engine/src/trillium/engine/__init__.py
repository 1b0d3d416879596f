"""Trillium's serving engine: continuous batching over per-request compressed KV caches.

Many requests run together, each with its own compression policy and budget: every step is one
forward pass over all running sequences' decode tokens plus prompt chunks of newly admitted ones
(:mod:`.scheduler`), attention is routed per sequence over caches that differ in length per
sequence, layer and KV head (:mod:`.attention`, :mod:`.kv`), and requests are admitted against a
KV byte budget (:mod:`.memory`) so that compression turns into capacity. No gRPC here: the
inference service drives it, and benchmarks call it in process.
"""

from importlib.metadata import version

from trillium.engine.engine import AsyncEngine, Engine, EngineConfig, EngineStats
from trillium.engine.errors import (
    CapacityExceededError,
    EngineError,
    RequestFailedError,
    RequestRejectedError,
)
from trillium.engine.memory import KVBudget, KVShape, default_kv_cache_bytes
from trillium.engine.sequence import (
    Cancelled,
    Failed,
    Finished,
    GenerationRequest,
    Prefilled,
    Started,
    Token,
)

__version__ = version("trillium-engine")  # the installed package's version (pyproject.toml)

__all__ = [
    "AsyncEngine",
    "CapacityExceededError",
    "Cancelled",
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineStats",
    "Failed",
    "Finished",
    "GenerationRequest",
    "KVBudget",
    "KVShape",
    "Prefilled",
    "RequestFailedError",
    "RequestRejectedError",
    "Started",
    "Token",
    "__version__",
    "default_kv_cache_bytes",
]
