"""The Helm chart, rendered offline (helm-python-sdk) and validated with Kubernetes' strict schemas."""

from __future__ import annotations

from pathlib import Path

import helm_python
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "trillium"
SCENARIOS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
KUBERNETES_VERSION = "1.30.0"
CORE_KINDS = {
    "Deployment",
    "Service",
    "StatefulSet",
    "ConfigMap",
    "PersistentVolumeClaim",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "HorizontalPodAutoscaler",
}


def render(values: dict) -> list[dict]:
    chart = helm_python.Chart.load(str(CHART))
    rendered = chart.render(values, name="rel", namespace="ns")
    return [doc for text in rendered.values() for doc in yaml.safe_load_all(text) if doc]


def scenario(name: str) -> dict:
    return yaml.safe_load((CHART / "ci" / name).read_text()) or {}


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def containers(deployment: dict) -> list[dict]:
    return deployment["spec"]["template"]["spec"]["containers"]


@pytest.fixture(scope="module", params=["default", *SCENARIOS])
def rendered(request) -> tuple[str, list[dict]]:
    values = {} if request.param == "default" else scenario(request.param)
    return request.param, render(values)


def test_every_core_object_passes_strict_validation(rendered):
    _, docs = rendered
    for doc in docs:
        if doc["kind"] in CORE_KINDS:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_crd_objects_are_well_formed(rendered):
    _, docs = rendered
    for monitor in by_kind(docs, "ServiceMonitor").values():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
        assert set(monitor["spec"]["selector"]["matchLabels"]) >= {"app.kubernetes.io/name"}


def test_every_container_is_hardened_and_probed(rendered):
    _, docs = rendered
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {"rel-trillium-inference", "rel-trillium-avatar", "rel-trillium-federated"}
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"] and container["resources"]["limits"]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert "grpc" in container[probe], probe
            assert container["livenessProbe"]["grpc"]["service"] == ""
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["metrics"] == 9090 and ports["grpc"] == 50051


def test_gpu_scheduling_only_when_gpus_are_requested():
    cpu = by_kind(render(scenario("cpu-only-values.yaml")), "Deployment")
    for deployment in cpu.values():
        pod = deployment["spec"]["template"]["spec"]
        assert "nvidia.com/gpu" not in str(pod)
        assert "tolerations" not in pod and "affinity" not in pod and "runtimeClassName" not in pod
    gpu = by_kind(render(scenario("gpu-values.yaml")), "Deployment")["rel-trillium-inference"]
    pod = gpu["spec"]["template"]["spec"]
    assert containers(gpu)[0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in containers(gpu)[0]["resources"]["requests"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["tolerations"][0]["value"] == "present"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms[0]["matchExpressions"][0]["values"] == ["NVIDIA-A100-SXM4-80GB", "NVIDIA-H100-80GB-HBM3"]
    assert "nvidia.com/gpu" not in str(
        by_kind(render(scenario("gpu-values.yaml")), "Deployment")["rel-trillium-federated"]
    )


def test_coordinator_is_a_single_recreated_replica_with_checkpoints():
    docs = render({})
    coordinator = by_kind(docs, "Deployment")["rel-trillium-federated"]
    assert coordinator["spec"]["replicas"] == 1 and coordinator["spec"]["strategy"]["type"] == "Recreate"
    assert "rel-trillium-federated-checkpoints" in by_kind(docs, "PersistentVolumeClaim")
    assert "rel-trillium-federated" not in by_kind(docs, "PodDisruptionBudget")
    inference = by_kind(docs, "Deployment")["rel-trillium-inference"]["spec"]["strategy"]
    assert inference["rollingUpdate"] == {"maxSurge": "100%", "maxUnavailable": 0}


def test_tls_moves_probes_to_the_plaintext_health_port():
    deployment = by_kind(render(scenario("tls-values.yaml")), "Deployment")["rel-trillium-inference"]
    container = containers(deployment)[0]
    assert container["readinessProbe"]["grpc"]["port"] == 50052
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TRILLIUM_TLS_REQUIRE_CLIENT_AUTH"] == "true" and env["TRILLIUM_HEALTH_PORT"] == "50052"
    assert env["TRILLIUM_AUTH_TOKEN_FILE"] == "/etc/trillium/auth/tokens"


def test_redis_in_chart_or_external():
    docs = render({})
    url = {
        e["name"]: e.get("value")
        for e in containers(by_kind(docs, "Deployment")["rel-trillium-inference"])[0]["env"]
    }
    assert url["REDIS_URL"] == "redis://rel-trillium-redis:6379/0"
    redis = by_kind(docs, "StatefulSet")["rel-trillium-redis"]
    args = containers(redis)[0]["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "volatile-lru"
    assert "rel-trillium-redis" in by_kind(docs, "NetworkPolicy")
    external = render(scenario("external-redis-values.yaml"))
    assert not by_kind(external, "StatefulSet")
    env = {
        e["name"]: e.get("value")
        for e in containers(by_kind(external, "Deployment")["rel-trillium-inference"])[0]["env"]
    }
    assert env["REDIS_URL"].startswith("rediss://")
    with pytest.raises(helm_python.HelmError, match="external.url"):
        render({"global": {"redis": {"enabled": False}}})


def test_dashboards_ship_as_configmaps_only_when_enabled():
    docs = render({})
    maps = {
        n: d
        for n, d in by_kind(docs, "ConfigMap").items()
        if d["metadata"]["labels"].get("grafana_dashboard")
    }
    assert {n.rsplit("-", 1)[1] for n in maps} == {"inference", "avatar", "federated"}
    off = render({"global": {"grafanaDashboards": {"enabled": False}}})
    assert not by_kind(off, "ConfigMap")


def test_values_schema_rejects_unknown_keys():
    with pytest.raises(helm_python.HelmError):
        render({"inference": {"replicas": 3}})  # the key is replicaCount
    with pytest.raises(helm_python.HelmError):
        render({"inference": {"gpu": {"count": "one"}}})


def test_every_value_is_documented_and_the_schema_is_current():
    import subprocess
    import sys

    raw = (CHART / "values.yaml").read_text().splitlines()

    def indent(line: str) -> int:
        return len(line) - len(line.lstrip())

    def documented(i: int) -> bool:
        # Documented by a "# --" line right above, or — for the entries of a free-form map such as
        # resources: {requests, limits} — by the comment above their parent key.
        j = i - 1
        while j >= 0 and indent(raw[j]) == indent(raw[i]) and "{" in raw[j] and "{" in raw[i]:
            j -= 1
        if raw[j].strip().startswith("# --"):
            return True
        return indent(raw[j]) < indent(raw[i]) and raw[j - 1].strip().startswith("# --")

    for i, line in enumerate(raw):
        stripped = line.strip()
        if ":" in stripped and not stripped.startswith(("#", "-")) and not stripped.endswith(":"):
            assert documented(i), f"values.yaml:{i + 1} has no '# --' comment"
    check = subprocess.run(
        [sys.executable, str(REPO / "deploy/helm/schema.py"), "--check"], capture_output=True
    )
    assert check.returncode == 0, check.stderr.decode()
