"""The inference service's own settings: models and engine limits (flags and ``TRILLIUM_*``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trillium.servicekit.settings import EnvSettings

__all__ = ["InferenceSettings"]


@dataclass(frozen=True)
class InferenceSettings(EnvSettings):
    """Flags of ``trillium-inference serve`` beyond the shared ones (see the README's table)."""

    models_config: str = field(
        default="", metadata={"help": "YAML model registry (empty: every folder of models_dir)"}
    )
    models_dir: str = field(
        default="", metadata={"help": "folder of model folders when no models_config (default assets/models)"}
    )
    kv_cache_bytes: int = field(
        default=0, metadata={"help": "KV byte budget per model (0: 40% of available memory at start)"}
    )
    max_batched_tokens: int = field(
        default=512, metadata={"help": "tokens per engine step (decode + prefill)"}
    )
    max_prefill_tokens_while_decoding: int = field(
        default=64, metadata={"help": "prompt tokens per step while any stream decodes (its latency)"}
    )
    max_running_requests: int = field(default=256, metadata={"help": "sequences admitted at once per model"})
    max_prefilling_requests: int = field(
        default=1, metadata={"help": "prompts in prefill at once (each holds its uncompressed KV)"}
    )
    max_queued_requests: int = field(default=256, metadata={"help": "requests waiting for KV memory"})
    max_queue_seconds: float = field(default=60.0, metadata={"help": "longest wait for KV memory"})
    max_new_tokens_limit: int = field(
        default=4096, metadata={"help": "the most max_new_tokens a request may ask"}
    )
    default_max_new_tokens: int = field(default=64, metadata={"help": "max_new_tokens when a request sets 0"})

    def __post_init__(self) -> None:
        for name in (
            "max_batched_tokens",
            "max_prefill_tokens_while_decoding",
            "max_running_requests",
            "max_prefilling_requests",
            "max_queued_requests",
            "max_new_tokens_limit",
            "default_max_new_tokens",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.kv_cache_bytes < 0:
            raise ValueError(f"kv_cache_bytes: must be >= 0, got {self.kv_cache_bytes}")
        if self.max_queue_seconds <= 0:
            raise ValueError(f"max_queue_seconds: must be > 0, got {self.max_queue_seconds}")
        if self.default_max_new_tokens > self.max_new_tokens_limit:
            raise ValueError("default_max_new_tokens: must not exceed max_new_tokens_limit")
