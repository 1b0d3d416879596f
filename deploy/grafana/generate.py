"""Grafana dashboards as code.

``python deploy/grafana/generate.py`` writes one JSON dashboard per service into
``deploy/helm/trillium/dashboards/`` (the Helm chart ships them as ConfigMaps for Grafana's sidecar);
``--check`` regenerates in memory and fails if the checked-in files differ, or if any panel queries a
metric that no service registers (each service's ``create_metrics`` is run into a fresh registry).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "deploy" / "helm" / "trillium" / "dashboards"
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Panel:
    title: str
    exprs: tuple[tuple[str, str], ...]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    description: str = ""
    thresholds: tuple[float, ...] = ()


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    panels: tuple[Panel, ...]
    variables: tuple[str, ...] = field(default=("job", "instance"))


def quantiles(
    metric: str, by: str = "", q: tuple[float, ...] = (0.5, 0.95, 0.99)
) -> tuple[tuple[str, str], ...]:
    group = f"le{', ' + by if by else ''}"
    return tuple(
        (
            f'histogram_quantile({x}, sum by ({group}) (rate({metric}_bucket{{job=~"$job"}}[{RATE}])))',
            f"p{int(x * 100)}" + (f" {{{{{by}}}}}" if by else ""),
        )
        for x in q
    )


def rate(metric: str, by: str) -> tuple[str, str]:
    return (f'sum by ({by}) (rate({metric}{{job=~"$job"}}[{RATE}]))', f"{{{{{by}}}}}")


def ratio(numerator: str, denominator: str, by: str) -> tuple[str, str]:
    """``numerator / denominator`` of per-group rates, guarded against division by zero."""
    part = 'sum by ({by}) (rate({metric}{{job=~"$job"}}[{rate}]))'
    top = part.format(by=by, metric=numerator, rate=RATE)
    bottom = part.format(by=by, metric=denominator, rate=RATE)
    legend = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(","))
    return (f"{top} / ({bottom} > 0)", legend)


def gauge(metric: str, legend: str, how: str = "max") -> tuple[str, str]:
    by = " by (instance)" if legend == "{{instance}}" else ""
    return (f'{how}{by} ({metric}{{job=~"$job"}})', legend)


GRPC_PANELS = (
    Panel(
        "gRPC requests by method and code",
        (
            (
                f'sum by (grpc_method, grpc_code) (rate(grpc_server_handled_total{{job=~"$job"}}[{RATE}]))',
                "{{grpc_method}} {{grpc_code}}",
            ),
        ),
        "reqps",
    ),
    Panel(
        "gRPC error ratio (non-OK)",
        (
            (
                f'sum(rate(grpc_server_handled_total{{job=~"$job", grpc_code!="OK"}}[{RATE}])) / '
                f'(sum(rate(grpc_server_handled_total{{job=~"$job"}}[{RATE}])) > 0)',
                "errors",
            ),
        ),
        "percentunit",
    ),
    Panel(
        "gRPC handling time p95 by method",
        quantiles("grpc_server_handling_seconds", "grpc_method", (0.95,)),
        "s",
    ),
    Panel(
        "Process resident memory",
        (('sum by (instance) (process_resident_memory_bytes{job=~"$job"})', "{{instance}}"),),
        "bytes",
    ),
)

DASHBOARDS = (
    Dashboard(
        "trillium-inference",
        "Trillium / Inference",
        (
            Panel("Time to first token", quantiles("inference_time_to_first_token_seconds"), "s"),
            Panel("Inter-token latency", quantiles("inference_inter_token_latency_seconds"), "s"),
            Panel("End-to-end request latency", quantiles("inference_e2e_request_latency_seconds"), "s"),
            Panel(
                "KV bytes raw vs compressed by policy",
                (
                    rate("inference_kv_cache_raw_bytes_total", "policy"),
                    rate("inference_kv_cache_compressed_bytes_total", "policy"),
                ),
                "Bps",
            ),
            Panel(
                "KV compression ratio by policy and modality",
                (
                    ratio(
                        "inference_kv_cache_raw_bytes_total",
                        "inference_kv_cache_compressed_bytes_total",
                        "policy, modality",
                    ),
                ),
            ),
            Panel(
                "Tokens kept per modality (fraction)",
                (ratio("inference_kv_tokens_kept_total", "inference_kv_tokens_seen_total", "modality"),),
                "percentunit",
            ),
            Panel(
                "KV compression time", quantiles("inference_kv_compression_seconds", "policy", (0.95,)), "s"
            ),
            Panel(
                "Requests running / waiting",
                (
                    gauge("inference_num_requests_running", "running", "sum"),
                    gauge("inference_num_requests_waiting", "waiting", "sum"),
                ),
            ),
            Panel(
                "Tokens per second",
                (
                    rate("inference_prompt_tokens_total", "model"),
                    rate("inference_generation_tokens_total", "model"),
                ),
                "short",
            ),
            Panel(
                "GPU memory used", (gauge("inference_gpu_memory_used_bytes", "{{instance}}", "sum"),), "bytes"
            ),
            Panel("Redis session store p95", quantiles("inference_redis_op_seconds", "op", (0.95,)), "s"),
            *GRPC_PANELS,
        ),
    ),
    Dashboard(
        "trillium-avatar",
        "Trillium / Avatar",
        (
            Panel(
                "Frame render time p95 vs 40 ms budget",
                quantiles("avatar_frame_render_seconds", "", (0.5, 0.95)),
                "s",
                thresholds=(0.04,),
            ),
            Panel(
                "Frame encode time p95", quantiles("avatar_frame_encode_seconds", "encoding", (0.95,)), "s"
            ),
            Panel(
                "Time to first frame", quantiles("avatar_time_to_first_frame_seconds", "", (0.5, 0.95)), "s"
            ),
            Panel(
                "Frames rendered / dropped",
                (
                    (f'sum(rate(avatar_frames_rendered_total{{job=~"$job"}}[{RATE}]))', "rendered"),
                    rate("avatar_frames_dropped_total", "reason"),
                ),
                "short",
            ),
            Panel("Active streams", (gauge("avatar_active_streams", "{{instance}}", "sum"),)),
            Panel(
                "GPU memory used", (gauge("avatar_gpu_memory_used_bytes", "{{instance}}", "sum"),), "bytes"
            ),
            *GRPC_PANELS,
        ),
    ),
    Dashboard(
        "trillium-federated",
        "Trillium / Federated",
        (
            Panel("Current round", (gauge("federated_current_round", "round"),), kind="stat"),
            Panel("Global accuracy", (gauge("federated_global_accuracy", "accuracy"),), "percentunit"),
            Panel("Round duration", quantiles("federated_round_duration_seconds", "", (0.5, 0.95)), "s"),
            Panel("Rounds by outcome", (rate("federated_rounds_total", "outcome"),)),
            Panel("Client updates by result", (rate("federated_client_updates_total", "result"),)),
            Panel(
                "Clients connected / selected",
                (
                    gauge("federated_clients_connected", "connected"),
                    gauge("federated_clients_selected", "selected"),
                ),
            ),
            Panel("Aggregation time p95", quantiles("federated_aggregation_seconds", "", (0.95,)), "s"),
            *GRPC_PANELS,
        ),
    ),
)


def panel_json(panel: Panel, panel_id: int) -> dict:
    x, y = (panel_id - 1) % 2 * 12, (panel_id - 1) // 2 * 8
    steps = [{"color": "green", "value": None}] + [{"color": "red", "value": t} for t in panel.thresholds]
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {
            "defaults": {"unit": panel.unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(panel.exprs)
        ],
    }


def variable(name: str) -> dict:
    query = (
        "label_values(grpc_server_started_total, job)"
        if name == "job"
        else ('label_values(grpc_server_started_total{job=~"$job"}, instance)')
    )
    return {
        "name": name,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name},
        "definition": query,
        "includeAll": True,
        "multi": True,
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
    }


def dashboard_json(dashboard: Dashboard) -> dict:
    datasource = {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"}
    return {
        "id": None,
        "uid": dashboard.uid,
        "title": dashboard.title,
        "tags": ["trillium"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [datasource, *(variable(v) for v in dashboard.variables)]},
        "panels": [panel_json(p, i) for i, p in enumerate(dashboard.panels, start=1)],
    }


def render_all() -> dict[str, str]:
    return {
        f"{d.uid}.json": json.dumps(dashboard_json(d), indent=2, sort_keys=True) + "\n" for d in DASHBOARDS
    }


_NAME = re.compile(r"\b([a-z_][a-z0-9_]*)\s*(?:\{|\[)")
_FUNCTIONS = {"rate", "sum", "max", "histogram_quantile", "by", "irate", "avg", "min", "increase"}


def queried_metrics() -> set[str]:
    names = set()
    for dashboard in DASHBOARDS:
        for panel in dashboard.panels:
            for expr, _ in panel.exprs:
                names |= {n for n in _NAME.findall(expr) if n not in _FUNCTIONS}
    return names


def exported_metrics() -> set[str]:
    """Sample names every service exports, from each service's metrics module in a fresh registry."""
    from prometheus_client import CollectorRegistry

    from trillium.avatar.service.metrics import create_metrics as avatar_metrics
    from trillium.federated.service.metrics import create_metrics as federated_metrics
    from trillium.inference.service.metrics import create_metrics as inference_metrics
    from trillium.servicekit.metrics import grpc_server_metrics
    from trillium.servicekit.server import session_store_metrics

    registry = CollectorRegistry()
    for create in (inference_metrics, avatar_metrics, federated_metrics, grpc_server_metrics):
        create(registry)
    session_store_metrics("inference", registry)
    session_store_metrics("federated", registry)
    names = {"process_resident_memory_bytes"}  # the default process collector
    for metric in registry.collect():
        kinds = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(metric.type, ("",))
        names |= {metric.name + suffix for suffix in kinds}
    return names


def check() -> list[str]:
    problems = []
    for name, text in render_all().items():
        path = OUT / name
        if not path.exists() or path.read_text() != text:
            problems.append(f"{path.relative_to(REPO)} is stale: run `make dashboards`")
    missing = queried_metrics() - exported_metrics()
    problems += [f"a panel queries {name}, which no service exports" for name in sorted(missing)]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail on stale files or unknown metrics")
    args = parser.parse_args()
    if args.check:
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (OUT / name).write_text(text)
    print(f"wrote {len(DASHBOARDS)} dashboards to {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
