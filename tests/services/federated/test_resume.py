"""SIGKILL the coordinator process mid-run: the restarted one resumes after the last completed round."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import grpc
import redis
import torch
from safetensors.torch import load_file

from trillium.federated.service.client_runtime import FederatedClient, Task
from trillium.federated.v1 import coordinator_pb2 as pb
from trillium.federated.v1 import coordinator_pb2_grpc
from trillium.servicekit.client import open_sync_channel
from trillium.servicekit.processes import ServiceProcess

NUM_ROUNDS = 5
PAUSE_ROUND = 3


def _start_process(data_dir: Path, redis_url: str, fl, port: int = 0) -> ServiceProcess:
    args = [
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--auth-tokens",
        fl.CLIENT_TOKEN,
        "--admin-tokens",
        fl.ADMIN_TOKEN,
    ]
    env = {
        "REDIS_URL": redis_url,
        "TRILLIUM_FL_HEARTBEAT_SECONDS": "0.2",
        "TRILLIUM_FL_KEEP_CHECKPOINTS": "10",
    }
    return ServiceProcess("trillium-coordinator", [*args, "--drain-seconds", "0"], env=env, start_timeout=120)


def _retry_unavailable(action, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _wait_status(stub, fl, predicate, timeout: float = 120.0) -> pb.RunStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = _retry_unavailable(
            lambda: stub.GetRunStatus(pb.GetRunStatusRequest(), metadata=fl.CLIENT_MD, timeout=10)
        )
        if predicate(status):
            return status
        assert time.monotonic() < deadline, f"condition not reached; last status:\n{status}"
        time.sleep(0.1)


def _digests(run_dir: Path, rounds: range) -> dict[str, str]:
    return {
        str(path.relative_to(run_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for number in rounds
        for path in sorted((run_dir / f"round-{number:06d}").iterdir())
    }


def test_sigkilled_coordinator_resumes_without_losing_or_repeating_rounds(
    tmp_path, redis_server, client_threads, fl
):
    pulled: list[tuple[int, Task]] = []
    paused = threading.Semaphore(0)
    gate = threading.Event()

    class PausingClient(FederatedClient):
        """Records every task; holds its round-3 training until the test opens the gate."""

        def train(self, task: Task):
            pulled.append((task.round, task))
            if task.round == PAUSE_ROUND and not gate.is_set():
                paused.release()
                assert gate.wait(120)
            return super().train(task)

    data_dir = tmp_path / "state"
    coordinator = _start_process(data_dir, redis_server.url, fl)
    try:
        stub = coordinator_pb2_grpc.CoordinatorStub(open_sync_channel(coordinator.target))
        config = fl.run_config(
            strategy="scaffold", num_rounds=NUM_ROUNDS, min_clients=2, strategy_parameters={"num_clients": 2}
        )
        run_id = _retry_unavailable(
            lambda: stub.StartRun(pb.StartRunRequest(config=config), metadata=fl.ADMIN_MD, timeout=30)
        ).run_id
        clients = client_threads(coordinator.target)
        for index in range(2):
            clients.add(index, 2, client_class=PausingClient)
        for _ in range(2):
            assert paused.acquire(timeout=120), "clients never reached the paused round"
        before = _wait_status(stub, fl, lambda s: len(s.rounds) == PAUSE_ROUND - 1)
        coordinator.process.kill()  # SIGKILL, mid-round 3
        coordinator.process.wait(30)
    finally:
        coordinator.stop()

    run_dir = data_dir / "federated" / "runs" / run_id
    assert json.loads((run_dir / "latest.json").read_text()) == {"completed_rounds": PAUSE_ROUND - 1}
    assert not (run_dir / f"round-{PAUSE_ROUND:06d}").exists()
    kept = _digests(run_dir, range(1, PAUSE_ROUND))
    checkpoint_weights = load_file(str(run_dir / f"round-{PAUSE_ROUND - 1:06d}" / "weights.safetensors"))
    checkpoint_c = load_file(str(run_dir / f"round-{PAUSE_ROUND - 1:06d}" / "strategy.safetensors"))

    with _start_process(data_dir, redis_server.url, fl, port=coordinator.port) as restarted:
        stub = coordinator_pb2_grpc.CoordinatorStub(open_sync_channel(restarted.target))
        gate.set()
        final = _wait_status(stub, fl, lambda s: s.state != pb.RUN_STATE_RUNNING, timeout=150)
        reports = clients.join(timeout=60)
        assert restarted.terminate(timeout=30) == 0

    assert final.run_id == run_id and final.state == pb.RUN_STATE_COMPLETED
    completed = [r.round for r in final.rounds if r.outcome == pb.ROUND_OUTCOME_COMPLETED]
    assert completed == list(range(1, NUM_ROUNDS + 1))
    assert [r.metrics["accuracy"] for r in final.rounds[: PAUSE_ROUND - 1]] == [
        r.metrics["accuracy"] for r in before.rounds
    ]
    assert _digests(run_dir, range(1, PAUSE_ROUND)) == kept  # completed rounds were not redone
    assert json.loads((run_dir / "latest.json").read_text()) == {"completed_rounds": NUM_ROUNDS}

    # Round 3 after the restart starts from the round-2 checkpoint: same weights, same SCAFFOLD c.
    round3 = [task for number, task in pulled if number == PAUSE_ROUND]
    assert len(round3) == 4  # two clients before the kill, two after
    for task in round3:
        for name, tensor in checkpoint_weights.items():
            assert torch.equal(task.instruction.weights[name], tensor)
        for name, tensor in checkpoint_c.items():
            assert torch.equal(task.instruction.payload[name], tensor)
    assert any(bool(t.abs().sum() > 0) for t in checkpoint_c.values())  # c was really restored, not zeros

    assert all(
        report.finished and report.rounds_trained == list(range(1, NUM_ROUNDS + 1))
        for report in reports.values()
    )
    assert all(report.registrations == 2 for report in reports.values())
    meta = redis.Redis.from_url(redis_server.url).hgetall(f"trillium:federated:v1:{{s:{run_id}}}:meta")
    assert meta[b"completed_rounds"] == str(NUM_ROUNDS).encode() and meta[b"state"] == b"RUN_STATE_COMPLETED"
