"""A full run over real gRPC with in-process clients, plus run lifecycle, auth and status codes."""

from __future__ import annotations

import json

import grpc
import pytest
import redis
import torch
from safetensors.torch import load_file

from trillium.federated.core.client import evaluate_model
from trillium.federated.service.run_config import load_dataset, make_model
from trillium.federated.v1 import coordinator_pb2 as pb


def test_full_fedcfa_run_completes_records_accuracy_and_checkpoints(
    start_coordinator, client_threads, fl, redis_server
):
    coordinator = start_coordinator()
    config = fl.run_config(
        strategy="fedcfa",
        num_rounds=3,
        min_clients=3,
        local_epochs=3,
        learning_rate=0.01,
        strategy_parameters={"mean_batch": 16},
    )
    run_id = coordinator.start(config).run_id
    clients = client_threads(coordinator.service.target)
    for index in range(3):
        clients.add(index, 3, partition="iid")
    reports = clients.join(timeout=120)

    status = coordinator.status(run_id)
    assert status.state == pb.RUN_STATE_COMPLETED
    assert [r.round for r in status.rounds] == [1, 2, 3]
    assert all(r.outcome == pb.ROUND_OUTCOME_COMPLETED and r.updates_accepted == 3 for r in status.rounds)
    accuracies = [r.metrics["accuracy"] for r in status.rounds]
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    # Ten classes: chance is 0.1. Runs differ (client ids are random, and updates are aggregated in
    # client-id order); after 3 rounds we observed 0.29-0.81, so the bar is twice chance.
    assert accuracies[-1] > 0.2
    assert sorted(reports) == [0, 1, 2]
    assert all(report.finished and report.rounds_trained == [1, 2, 3] for report in reports.values())

    # The last checkpoint holds the final global model (its accuracy is the reported one) and the pool.
    run_dir = coordinator.data_dir / "federated" / "runs" / run_id
    assert json.loads((run_dir / "latest.json").read_text()) == {"completed_rounds": 3}
    weights = load_file(str(run_dir / "round-000003" / "weights.safetensors"))
    _, test = load_dataset("digits")
    model = make_model("mlp", test, seed=None)
    model.load_state_dict(weights)
    assert evaluate_model(model, test)["accuracy"] == pytest.approx(accuracies[-1])
    pool = load_file(str(run_dir / "round-000003" / "strategy.safetensors"))
    assert pool["global_x"].shape[1:] == (1, 8, 8) and pool["global_y"].shape[1] == 10
    assert torch.isfinite(pool["global_x"]).all()

    # Round state in Redis, under the federated namespace.
    client = redis.Redis.from_url(redis_server.url)
    meta = client.hgetall(f"trillium:federated:v1:{{s:{run_id}}}:meta")
    assert meta[b"completed_rounds"] == b"3" and meta[b"state"] == b"RUN_STATE_COMPLETED"

    assert coordinator.metric("federated_rounds_total", {"outcome": "completed"}) == 3
    assert coordinator.metric("federated_client_updates_total", {"result": "accepted"}) == 9
    assert coordinator.metric("federated_global_accuracy") == pytest.approx(accuracies[-1])
    assert coordinator.metric("federated_current_round") == 3
    assert coordinator.metric("federated_client_update_bytes_count") == 9
    assert coordinator.metric("federated_aggregation_seconds_count") == 3


def test_start_run_needs_the_admin_token_and_every_rpc_a_valid_token(start_coordinator, fl):
    coordinator = start_coordinator()
    request = pb.StartRunRequest(config=fl.run_config())
    with pytest.raises(grpc.RpcError) as denied:
        coordinator.stub.StartRun(request, metadata=fl.CLIENT_MD, timeout=10)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    for metadata in ([("authorization", "Bearer wrong")], []):
        with pytest.raises(grpc.RpcError) as rejected:
            coordinator.stub.RegisterClient(
                pb.RegisterClientRequest(client_name="x"), metadata=metadata, timeout=10
            )
        assert rejected.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as rejected:
        coordinator.stub.StopRun(pb.StopRunRequest(run_id="run-x"), metadata=fl.CLIENT_MD, timeout=10)
    assert rejected.value.code() == grpc.StatusCode.PERMISSION_DENIED
    registered = coordinator.stub.RegisterClient(
        pb.RegisterClientRequest(client_name="ok"), metadata=fl.CLIENT_MD, timeout=10
    )
    assert registered.client_id and registered.heartbeat_interval_seconds == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"strategy": "fedsgd"}, "config.strategy"),
        ({"fraction_fit": 0.0}, "config.fraction_fit"),
        ({"fraction_fit": 1.5}, "config.fraction_fit"),
        ({"num_rounds": 0}, "config.num_rounds"),
        ({"min_clients": 0}, "config.min_clients"),
        ({"round_timeout_seconds": -1.0}, "config.round_timeout_seconds"),
        ({"model": "resnet"}, "config.model"),
        ({"dataset": "imagenet"}, "config.dataset"),
        ({"learning_rate": 0.0}, "config.learning_rate"),
        ({"batch_size": 0}, "config.batch_size"),
        ({"strategy_parameters": {"mu": 0.1}}, "config.strategy_parameters.mu"),
        ({"strategy": "scaffold"}, "config.strategy_parameters.num_clients"),
        ({"strategy": "fedprox", "strategy_parameters": {"mu": -1.0}}, "config.strategy_parameters"),
    ],
)
def test_start_run_rejects_each_bad_field_by_name(start_coordinator, fl, overrides, field):
    coordinator = start_coordinator()
    with pytest.raises(grpc.RpcError) as error:
        coordinator.start(fl.run_config(**overrides))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith(field)


def test_run_lifecycle_status_codes(start_coordinator, fl):
    coordinator = start_coordinator()
    with pytest.raises(grpc.RpcError) as error:
        coordinator.status("run-unknown")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    run = coordinator.start(fl.run_config(min_clients=2))
    assert run.state == pb.RUN_STATE_RUNNING and run.current_round == 1
    with pytest.raises(grpc.RpcError) as error:
        coordinator.start(fl.run_config())
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as error:
        coordinator.stub.StopRun(pb.StopRunRequest(run_id="run-unknown"), metadata=fl.ADMIN_MD, timeout=10)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND

    client_id = coordinator.stub.RegisterClient(
        pb.RegisterClientRequest(client_name="a"), metadata=fl.CLIENT_MD, timeout=10
    ).client_id
    beat = coordinator.stub.Heartbeat(
        pb.HeartbeatRequest(client_id=client_id), metadata=fl.CLIENT_MD, timeout=10
    )
    assert beat.action == pb.CLIENT_ACTION_WAIT  # one client connected, two needed
    stopped = coordinator.stub.StopRun(
        pb.StopRunRequest(run_id=run.run_id, reason="test"), metadata=fl.ADMIN_MD, timeout=10
    )
    assert stopped.state == pb.RUN_STATE_STOPPED and stopped.message == "test"
    beat = coordinator.stub.Heartbeat(
        pb.HeartbeatRequest(client_id=client_id), metadata=fl.CLIENT_MD, timeout=10
    )
    assert beat.action == pb.CLIENT_ACTION_FINISH
    with pytest.raises(grpc.RpcError) as error:
        coordinator.stub.StopRun(pb.StopRunRequest(run_id=run.run_id), metadata=fl.ADMIN_MD, timeout=10)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as error:
        coordinator.stub.Heartbeat(
            pb.HeartbeatRequest(client_id="c-unknown"), metadata=fl.CLIENT_MD, timeout=10
        )
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    second = coordinator.start(fl.run_config())  # a stopped run no longer blocks a new one
    assert second.run_id != run.run_id
