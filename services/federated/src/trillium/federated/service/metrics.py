"""The coordinator's Prometheus metrics (names and buckets of the platform's federated table)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

ROUND_SECONDS_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
UPDATE_BYTES_BUCKETS = (1e5, 1e6, 1e7, 1e8, 1e9, 1e10)
AGGREGATION_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60)
UPDATE_SECONDS_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
ACCURACY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99, 1.0)

ROUND_OUTCOMES = ("completed", "timeout", "aborted")
UPDATE_RESULTS = ("accepted", "rejected", "late")


@dataclass
class CoordinatorMetrics:
    rounds_total: Counter
    round_duration_seconds: Histogram
    current_round: Gauge
    clients_connected: Gauge
    clients_selected: Gauge
    client_updates_total: Counter
    client_update_bytes: Histogram
    client_update_seconds: Histogram
    aggregation_seconds: Histogram
    global_accuracy: Gauge


def create_metrics(registry: CollectorRegistry) -> CoordinatorMetrics:
    """Register every coordinator metric in ``registry`` (the runtime's, so tests stay isolated).

    ``federated_global_accuracy`` is a gauge (the latest round's test accuracy): a histogram of one
    value per round says little; the round history is in ``GetRunStatus``.
    """
    metrics = CoordinatorMetrics(
        rounds_total=Counter(
            "federated_rounds_total", "Finished rounds by outcome.", ["outcome"], registry=registry
        ),
        round_duration_seconds=Histogram(
            "federated_round_duration_seconds",
            "Round start to aggregated model.",
            buckets=ROUND_SECONDS_BUCKETS,
            registry=registry,
        ),
        current_round=Gauge("federated_current_round", "Round in progress (1-based).", registry=registry),
        clients_connected=Gauge(
            "federated_clients_connected", "Clients that heartbeated recently.", registry=registry
        ),
        clients_selected=Gauge(
            "federated_clients_selected", "Clients selected for the current round.", registry=registry
        ),
        client_updates_total=Counter(
            "federated_client_updates_total", "Client updates by result.", ["result"], registry=registry
        ),
        client_update_bytes=Histogram(
            "federated_client_update_bytes",
            "Payload bytes of one client update.",
            buckets=UPDATE_BYTES_BUCKETS,
            registry=registry,
        ),
        client_update_seconds=Histogram(
            "federated_client_update_seconds",
            "Round start to an accepted update (stragglers).",
            buckets=UPDATE_SECONDS_BUCKETS,
            registry=registry,
        ),
        aggregation_seconds=Histogram(
            "federated_aggregation_seconds",
            "Strategy aggregation time.",
            buckets=AGGREGATION_SECONDS_BUCKETS,
            registry=registry,
        ),
        global_accuracy=Gauge(
            "federated_global_accuracy", "Test accuracy of the latest global model.", registry=registry
        ),
    )
    for outcome in ROUND_OUTCOMES:
        metrics.rounds_total.labels(outcome)
    for result in UPDATE_RESULTS:
        metrics.client_updates_total.labels(result)
    return metrics
