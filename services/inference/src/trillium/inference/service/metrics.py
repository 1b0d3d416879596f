"""Prometheus metrics of the inference service (names: platform conventions, vLLM-compatible buckets).

``InferenceMetrics(registry)`` registers every metric in ``registry``; the dashboard generator builds
one in a fresh registry to check that every panel queries a metric that exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
REQUEST_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
)
COMPRESSION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class InferenceMetrics:
    time_to_first_token: Histogram
    inter_token_latency: Histogram
    e2e_request_latency: Histogram
    request_queue_time: Histogram
    prompt_tokens: Counter
    generation_tokens: Counter
    requests: Counter
    requests_running: Gauge
    requests_waiting: Gauge
    kv_cache_usage: Gauge
    kv_raw_bytes: Counter
    kv_compressed_bytes: Counter
    kv_tokens_kept: Counter
    kv_tokens_seen: Counter
    kv_compression_seconds: Histogram
    prefill_seconds: Histogram
    prefix_cache_queries: Counter
    prefix_cache_hits: Counter
    backend_request_seconds: Histogram
    gpu_memory_used: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> InferenceMetrics:
        def histogram(name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=registry)

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, labels, registry=registry)

        kv_labels = ("modality", "policy")
        return cls(
            time_to_first_token=histogram(
                "inference_time_to_first_token_seconds", "Time to first token.", ("model",), TTFT_BUCKETS
            ),
            inter_token_latency=histogram(
                "inference_inter_token_latency_seconds",
                "Time between output tokens.",
                ("model",),
                ITL_BUCKETS,
            ),
            e2e_request_latency=histogram(
                "inference_e2e_request_latency_seconds",
                "Request latency, end to end.",
                ("model",),
                REQUEST_BUCKETS,
            ),
            request_queue_time=histogram(
                "inference_request_queue_time_seconds",
                "Time requests waited for a slot.",
                ("model",),
                REQUEST_BUCKETS,
            ),
            prompt_tokens=counter("inference_prompt_tokens", "Prompt tokens processed.", ("model",)),
            generation_tokens=counter("inference_generation_tokens", "Tokens generated.", ("model",)),
            requests=counter("inference_requests", "Finished requests.", ("model", "finish_reason")),
            requests_running=gauge("inference_num_requests_running", "Requests being processed."),
            requests_waiting=gauge("inference_num_requests_waiting", "Requests waiting for a slot."),
            kv_cache_usage=gauge(
                "inference_kv_cache_usage_ratio", "KV-cache memory in use over its budget (0-1)."
            ),
            kv_raw_bytes=counter("inference_kv_cache_raw_bytes", "KV bytes before compression.", kv_labels),
            kv_compressed_bytes=counter(
                "inference_kv_cache_compressed_bytes", "KV bytes after compression.", kv_labels
            ),
            kv_tokens_kept=counter(
                "inference_kv_tokens_kept", "Prompt tokens kept in the KV cache.", kv_labels
            ),
            kv_tokens_seen=counter(
                "inference_kv_tokens_seen", "Prompt tokens before compression.", kv_labels
            ),
            kv_compression_seconds=histogram(
                "inference_kv_compression_seconds",
                "Time spent compressing the KV cache.",
                ("policy",),
                COMPRESSION_BUCKETS,
            ),
            prefill_seconds=histogram(
                "inference_prefill_seconds",
                "Prompt forward pass, compression included.",
                ("policy",),
                TTFT_BUCKETS,
            ),
            prefix_cache_queries=counter(
                "inference_prefix_cache_queries", "Session cache look-ups.", ("model",)
            ),
            prefix_cache_hits=counter("inference_prefix_cache_hits", "Session cache hits.", ("model",)),
            backend_request_seconds=histogram(
                "inference_backend_request_seconds",
                "Model backend call latency.",
                ("backend",),
                REQUEST_BUCKETS,
            ),
            gpu_memory_used=gauge("inference_gpu_memory_used_bytes", "GPU memory in use by the service."),
        )


def create_metrics(registry: CollectorRegistry) -> InferenceMetrics:
    return InferenceMetrics.create(registry)
