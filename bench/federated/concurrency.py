"""Coordinator under load: N concurrent gRPC clients on loopback through full FedAvg rounds.

Starts a real coordinator process (`trillium-coordinator`, embedded Redis, auth on), then N clients
in this process, each in its own thread with its own channel, running the real client runtime
(register, heartbeat, pull the task in chunks, train on its digits shard, push the update in chunks).
Every client is selected every round. Counts RPC errors and rejected updates (the goal is 0) and
reports round durations. Bounded: a fixed number of rounds and a deadline.

    python bench/federated/concurrency.py --clients 100 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import threading
import time
from pathlib import Path

import grpc

from trillium.federated.service.client_runtime import FederatedClient, load_client_data
from trillium.federated.service.demo import demo_config
from trillium.federated.v1 import coordinator_pb2 as pb
from trillium.federated.v1 import coordinator_pb2_grpc
from trillium.servicekit.client import bearer_metadata, open_sync_channel
from trillium.servicekit.probes import wait_until_serving
from trillium.servicekit.processes import ServiceProcess

REPO = Path(__file__).resolve().parents[2]


def run_load(num_clients: int, rounds: int, deadline_seconds: float) -> dict:
    client_token, admin_token = secrets.token_hex(8), secrets.token_hex(8)
    workdir = tempfile.mkdtemp(prefix="trillium-fl-load-")
    env = {"TRILLIUM_FL_HEARTBEAT_SECONDS": "0.5"}
    args = [
        "--data-dir",
        workdir,
        "--auth-tokens",
        client_token,
        "--admin-tokens",
        admin_token,
        "--drain-seconds",
        "0",
        "--grace-seconds",
        "2",
        "--max-concurrent-rpcs",
        str(4 * num_clients),
    ]
    errors: list[str] = []
    reports = []
    with ServiceProcess("trillium-coordinator", args, env=env) as coordinator:
        wait_until_serving(coordinator.target, "trillium.federated.v1.Coordinator", timeout=120)
        stub = coordinator_pb2_grpc.CoordinatorStub(open_sync_channel(coordinator.target))
        config = demo_config("fedavg", rounds, num_clients, seed=0)
        config.local_epochs = 1
        config.round_timeout_seconds = deadline_seconds
        status = stub.StartRun(
            pb.StartRunRequest(config=config), metadata=bearer_metadata(admin_token), timeout=30
        )
        stop = threading.Event()

        def client_thread(index: int) -> None:
            data = load_client_data("digits", "iid", index, num_clients, seed=0)
            try:
                with FederatedClient(
                    coordinator.target,
                    client_token,
                    data,
                    "digits",
                    name=f"load-{index}",
                    should_stop=stop.is_set,
                ) as client:
                    reports.append(client.run(max_seconds=deadline_seconds))
            except (grpc.RpcError, RuntimeError, ValueError) as exc:
                errors.append(f"client {index}: {exc!r}")

        started = time.perf_counter()
        threads = [threading.Thread(target=client_thread, args=(i,), daemon=True) for i in range(num_clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=max(1.0, deadline_seconds - (time.perf_counter() - started)))
        stop.set()
        elapsed = time.perf_counter() - started
        final = stub.GetRunStatus(
            pb.GetRunStatusRequest(run_id=status.run_id), metadata=bearer_metadata(client_token), timeout=30
        )
        coordinator.terminate(timeout=30)
    rejected = sum(1 for r in reports for response in r.responses if not response.accepted)
    completed = [r for r in final.rounds if r.outcome == pb.ROUND_OUTCOME_COMPLETED]
    return {
        "clients": num_clients,
        "rounds_requested": rounds,
        "rounds_completed": len(completed),
        "run_state": pb.RunState.Name(final.state),
        "client_errors": len(errors),
        "error_samples": errors[:5],
        "updates_rejected": rejected,
        "updates_accepted": sum(r.updates_accepted for r in completed),
        "round_seconds": [r.duration_seconds for r in completed],
        "wall_seconds": elapsed,
        "clients_finished": sum(1 for r in reports if r.finished),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds for the whole load test")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "federated-concurrency.json")
    args = parser.parse_args()
    result = run_load(args.clients, args.rounds, args.deadline)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
