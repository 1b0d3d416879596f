"""``make demo``: a coordinator and a few client processes on loopback train FedCFA on digits.

Everything is a real process talking real gRPC: ``trillium-coordinator serve`` (with its embedded
Redis unless ``redis_url`` is given) and ``trillium-fl-client`` per client; the demo starts the run
with the admin token and prints the global test accuracy after every round.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from trillium.common.v1 import values_pb2
from trillium.federated.v1 import coordinator_pb2 as pb
from trillium.federated.v1 import coordinator_pb2_grpc
from trillium.servicekit.client import bearer_metadata, open_sync_channel
from trillium.servicekit.processes import ServiceProcess


def demo_config(strategy: str, rounds: int, num_clients: int, seed: int) -> pb.RunConfig:
    """Small, CPU-fast settings: the library's MLP, every client every round, 8×8 digits."""
    parameters = {"mean_batch": values_pb2.ParameterValue(integer=16)} if strategy == "fedcfa" else {}
    if strategy in ("scaffold", "feddyn"):
        parameters["num_clients"] = values_pb2.ParameterValue(integer=num_clients)
    return pb.RunConfig(
        strategy=strategy,
        num_rounds=rounds,
        fraction_fit=1.0,
        min_clients=num_clients,
        round_timeout_seconds=120.0,
        model="mlp",
        dataset="digits",
        seed=seed,
        local_epochs=3,
        batch_size=32,
        learning_rate=0.01,  # FedCFA's counterfactual terms (weights 5, 5) diverge at 0.05 on this MLP
        strategy_parameters=parameters,
    )


def _client_command(target: str, index: int, num_clients: int, partition: str, seed: int) -> list[str]:
    executable = (
        shutil.which("trillium-fl-client", path=str(Path(sys.executable).parent)) or "trillium-fl-client"
    )
    return [
        executable,
        "--coordinator",
        target,
        "--dataset",
        "digits",
        "--partition",
        partition,
        "--client-index",
        str(index),
        "--num-clients",
        str(num_clients),
        "--seed",
        str(seed),
        "--log-level",
        "WARNING",
    ]


def run_demo(
    num_clients: int = 4,
    rounds: int = 3,
    *,
    strategy: str = "fedcfa",
    partition: str = "dirichlet:0.3",
    seed: int = 0,
    data_dir: str | None = None,
    redis_url: str = "",
    timeout_seconds: float = 600.0,
    print_fn: Callable[[str], None] = print,
) -> list[pb.RoundSummary]:
    """Run the demo and return the completed rounds' summaries (``metrics["accuracy"]`` per round)."""
    if num_clients < 1 or rounds < 1:
        raise ValueError("num_clients, rounds: must be >= 1")
    client_token, admin_token = secrets.token_hex(8), secrets.token_hex(8)
    workdir = Path(data_dir or tempfile.mkdtemp(prefix="trillium-fl-demo-"))
    env = {"TRILLIUM_FL_HEARTBEAT_SECONDS": "0.5", "TRILLIUM_FL_TOKEN": client_token}
    if redis_url:
        env["REDIS_URL"] = redis_url
    args = ["--data-dir", str(workdir), "--auth-tokens", client_token, "--admin-tokens", admin_token]
    args += ["--drain-seconds", "0", "--grace-seconds", "2"]
    with ServiceProcess("trillium-coordinator", args, env=env) as coordinator:
        stub = coordinator_pb2_grpc.CoordinatorStub(open_sync_channel(coordinator.target))
        status = _call_when_ready(
            lambda: stub.StartRun(
                pb.StartRunRequest(config=demo_config(strategy, rounds, num_clients, seed)),
                metadata=bearer_metadata(admin_token),
                timeout=30,
            ),
            deadline=time.monotonic() + 60,
        )
        print_fn(
            f"run {status.run_id}: {strategy}, {num_clients} clients, {rounds} rounds, digits ({partition})"
        )
        clients = [
            subprocess.Popen(
                _client_command(coordinator.target, i, num_clients, partition, seed),
                env={**os.environ, **env},
                stdout=subprocess.DEVNULL,
            )
            for i in range(num_clients)
        ]
        try:
            status = _follow(stub, status.run_id, client_token, time.monotonic() + timeout_seconds, print_fn)
        finally:
            for client in clients:
                try:
                    client.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    client.kill()
                    client.wait()
            coordinator.terminate(timeout=30)
    print_fn(f"run {status.run_id}: {pb.RunState.Name(status.state)} — {status.message}")
    return [r for r in status.rounds if r.outcome == pb.ROUND_OUTCOME_COMPLETED]


def _call_when_ready(action: Callable[[], pb.RunStatus], deadline: float) -> pb.RunStatus:
    while True:
        try:
            return action()
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _follow(stub, run_id: str, token: str, deadline: float, print_fn: Callable[[str], None]) -> pb.RunStatus:
    printed = 0
    while True:
        status = stub.GetRunStatus(
            pb.GetRunStatusRequest(run_id=run_id), metadata=bearer_metadata(token), timeout=10
        )
        for summary in status.rounds[printed:]:
            outcome = pb.RoundOutcome.Name(summary.outcome).removeprefix("ROUND_OUTCOME_").lower()
            accuracy = summary.metrics.get("accuracy", float("nan"))
            updates = f"{summary.updates_accepted}/{summary.clients_selected} updates"
            print_fn(f"round {summary.round}: {outcome}, {updates}, accuracy {accuracy:.4f}")
        printed = len(status.rounds)
        if status.state != pb.RUN_STATE_RUNNING:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"timeout_seconds: run {run_id} still running at round {status.current_round}")
        time.sleep(0.25)
