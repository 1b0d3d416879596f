"""Kustomize overlays validate strictly; generated files (k8s base, dashboards, schema) are current,
and every dashboard panel queries a metric some service really exports."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def run_check(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / script), "--check"], capture_output=True, text=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) not installed")
@pytest.mark.parametrize("overlay", ["cpu-dev", "gpu"])
def test_overlay_builds_and_validates_strictly(overlay):
    command = ["kubectl", "kustomize", str(REPO / "k8s/overlays" / overlay)]
    built = subprocess.run(command, capture_output=True, text=True, check=True)
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    for name, deployment in deployments.items():
        limits = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        wants_gpu = overlay == "gpu" and name in ("trillium-inference", "trillium-avatar")
        assert ("nvidia.com/gpu" in limits) == wants_gpu, name
        assert len(deployment["spec"]["template"]["spec"]["containers"]) == 1


def test_k8s_base_is_generated_from_the_chart():
    result = run_check("deploy/k8s_base.py")
    assert result.returncode == 0, result.stderr


def test_dashboards_are_current_and_query_only_exported_metrics():
    result = run_check("deploy/grafana/generate.py")
    assert result.returncode == 0, result.stderr


def test_dashboard_check_catches_an_unknown_metric(monkeypatch):
    sys.path.insert(0, str(REPO / "deploy" / "grafana"))
    try:
        import generate
    finally:
        sys.path.pop(0)
    bad = generate.Panel("typo", (("sum(rate(inference_tokens_totl[5m]))", "x"),))
    first = generate.DASHBOARDS[0]
    monkeypatch.setattr(generate, "DASHBOARDS", (generate.Dashboard(first.uid, first.title, (bad,)),))
    assert "inference_tokens_totl" in generate.queried_metrics()
    assert any("inference_tokens_totl" in problem for problem in generate.check())


def test_dashboard_conventions():
    import json

    for path in (REPO / "deploy/helm/trillium/dashboards").glob("*.json"):
        board = json.loads(path.read_text())
        assert board["id"] is None and board["uid"].startswith("trillium-") and "trillium" in board["tags"]
        assert board["templating"]["list"][0]["name"] == "datasource"
        for panel in board["panels"]:
            for target in panel["targets"]:
                if "rate(" in target["expr"]:
                    assert "$__rate_interval" in target["expr"], (path.name, panel["title"])
