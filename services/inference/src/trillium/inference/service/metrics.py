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
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TOKEN_BUCKETS = (1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
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
    kv_cache_bytes_used: Gauge
    kv_cache_budget_bytes: Gauge
    batch_size: Histogram
    step_tokens: Histogram
    admission_rejections: Counter

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
            requests_running=gauge(
                "inference_num_requests_running", "Requests admitted by the engine.", ("model",)
            ),
            requests_waiting=gauge(
                "inference_num_requests_waiting", "Requests waiting for KV memory.", ("model",)
            ),
            kv_cache_usage=gauge(
                "inference_kv_cache_usage_ratio", "KV bytes reserved over the KV budget (0-1).", ("model",)
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
            kv_cache_bytes_used=gauge(
                "inference_kv_cache_bytes_used", "KV bytes reserved by admitted requests.", ("model",)
            ),
            kv_cache_budget_bytes=gauge("inference_kv_cache_budget_bytes", "The KV byte budget.", ("model",)),
            batch_size=histogram(
                "inference_batch_size", "Sequences in one engine step.", ("model",), BATCH_BUCKETS
            ),
            step_tokens=histogram(
                "inference_step_tokens",
                "Tokens in one engine step (decode + prefill).",
                ("model",),
                TOKEN_BUCKETS,
            ),
            admission_rejections=counter(
                "inference_admission_rejections",
                "Requests refused for capacity, by limit.",
                ("model", "reason"),
            ),
        )


def create_metrics(registry: CollectorRegistry) -> InferenceMetrics:
    return InferenceMetrics.create(registry)


def engine_observer(metrics: InferenceMetrics, model: str):
    """An ``Engine.on_step`` callback that keeps the engine's gauges and histograms current
    (called on the engine thread after every step, and once when it goes idle)."""

    def observe(engine, plan, _seconds: float) -> None:
        budget, scheduler = engine.budget, engine.scheduler
        metrics.requests_running.labels(model).set(len(scheduler.running))
        metrics.requests_waiting.labels(model).set(len(scheduler.waiting) + engine.pending)
        metrics.kv_cache_bytes_used.labels(model).set(budget.used)
        metrics.kv_cache_budget_bytes.labels(model).set(budget.total)
        metrics.kv_cache_usage.labels(model).set(budget.usage_ratio)
        if plan:
            metrics.batch_size.labels(model).observe(len(plan.decode) + len(plan.prefill))
            metrics.step_tokens.labels(model).observe(plan.tokens)

    return observe
