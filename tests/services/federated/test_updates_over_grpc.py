"""Bad updates are dropped with a reason naming the field; a dead client does not stall the round."""

from __future__ import annotations

import logging
import time

import pytest

from trillium.federated.service.client_runtime import FederatedClient, load_client_data, update_messages
from trillium.federated.v1 import coordinator_pb2 as pb


def _wait_for_action(client: FederatedClient, action: int, timeout: float = 30.0) -> pb.HeartbeatResponse:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        beat = client.heartbeat()
        if beat.action == action:
            return beat
        time.sleep(0.05)
    raise AssertionError(f"no {pb.ClientAction.Name(action)} within {timeout}s")


def _push(client: FederatedClient, messages: list[pb.PushUpdateRequest]) -> pb.PushUpdateResponse:
    return client.stub.PushUpdate(iter(messages), metadata=client.metadata, timeout=30)


def _header(client: FederatedClient, run_id: str, round_number: int, **changes) -> pb.UpdateHeader:
    return pb.UpdateHeader(
        **{"client_id": client.client_id, "run_id": run_id, "round": round_number, **changes}
    )


def test_malformed_updates_are_rejected_with_a_reason_and_the_round_survives(start_coordinator, fl):
    coordinator = start_coordinator()
    data = load_client_data("digits", "iid", 0, 4)
    with FederatedClient(coordinator.service.target, fl.CLIENT_TOKEN, data, "digits") as client:
        client.register()
        run_id = coordinator.start(
            fl.run_config(strategy="scaffold", strategy_parameters={"num_clients": 1})
        ).run_id
        beat = _wait_for_action(client, pb.CLIENT_ACTION_TRAIN)
        task = client.pull_task(run_id, beat.round)
        assert task.round == 1 and set(task.instruction.payload) == {
            f"server_c/{n}" for n in task.instruction.weights
        }
        good = client.train(task)
        first = next(iter(good.weights))

        def variant(**changes):
            result = type(good)(dict(good.weights), good.num_examples, dict(good.metrics), dict(good.extras))
            for key, value in changes.items():
                setattr(result, key, value)
            return result

        nan_weights = {k: v.clone() for k, v in good.weights.items()}
        nan_weights[first][0] = float("nan")
        wrong_shape = {**good.weights, first: good.weights[first][:-1]}
        tampered = update_messages(_header(client, run_id, 1), good, "scaffold")
        chunk = tampered[1].chunk
        tampered[1].chunk.data = bytes([chunk.data[0] ^ 0xFF]) + chunk.data[1:]
        no_extras = variant(extras={})
        inf_extras = variant(extras={k: v.clone().fill_(float("inf")) for k, v in good.extras.items()})

        cases = [
            (
                update_messages(_header(client, run_id, 1), variant(weights=nan_weights), "scaffold"),
                f"payloads.weights[{first!r}]: contains NaN",
            ),
            (
                update_messages(_header(client, run_id, 1), variant(weights=wrong_shape), "scaffold"),
                f"payloads.weights[{first!r}]: shape",
            ),
            (tampered, "header.payloads[0].blob.sha256"),
            (
                update_messages(_header(client, run_id, 1), no_extras, "scaffold"),
                "payloads.control_variate_delta",
            ),
            (
                update_messages(_header(client, run_id, 1), inf_extras, "scaffold"),
                "payloads.control_variate_delta",
            ),
            (
                update_messages(_header(client, run_id, 1), variant(num_examples=0), "scaffold"),
                "header.num_examples",
            ),
            (
                update_messages(_header(client, run_id, 1, client_id="c-nobody"), good, "scaffold"),
                "client_id: unknown client",
            ),
            (update_messages(_header(client, "run-other", 1), good, "scaffold"), "run_id"),
            (update_messages(_header(client, run_id, 7), good, "scaffold"), "round: round 7 has not started"),
        ]
        for messages, reason in cases:
            response = _push(client, messages)
            assert not response.accepted
            assert response.reason.startswith(reason), (reason, response.reason)

        accepted = _push(client, update_messages(_header(client, run_id, 1), good, "scaffold"))
        assert accepted.accepted and accepted.round == 1
        status = coordinator.wait_for(lambda s: len(s.rounds) >= 1)
        assert status.rounds[0].outcome == pb.ROUND_OUTCOME_COMPLETED
        assert status.rounds[0].updates_accepted == 1
        assert status.rounds[0].updates_rejected == 8  # every rejection above except the future round

        late = _push(client, update_messages(_header(client, run_id, 1), good, "scaffold"))
        assert not late.accepted and late.reason.startswith("round: round 1 is closed")
        assert coordinator.metric("federated_client_updates_total", {"result": "rejected"}) == 9
        assert coordinator.metric("federated_client_updates_total", {"result": "late"}) == 1
        assert coordinator.metric("federated_client_updates_total", {"result": "accepted"}) == 1
        assert coordinator.status(run_id).state == pb.RUN_STATE_RUNNING


def test_a_client_dying_mid_round_is_logged_and_the_round_completes_with_the_minimum(
    start_coordinator, client_threads, fl, caplog
):
    caplog.set_level(logging.WARNING, logger="trillium.federated.service.coordinator")
    coordinator = start_coordinator()
    dying = FederatedClient(
        coordinator.service.target, fl.CLIENT_TOKEN, load_client_data("digits", "iid", 3, 4), "digits"
    )
    dying.register()
    clients = client_threads(coordinator.service.target)
    clients.add(0, 3)
    clients.add(1, 3)
    deadline = time.monotonic() + 60
    while len(coordinator.engine.connected_clients()) < 3:
        dying.heartbeat()
        assert time.monotonic() < deadline, "clients did not register"
        time.sleep(0.05)
    run_id = coordinator.start(fl.run_config(num_rounds=2, min_clients=2, round_timeout_seconds=4.0)).run_id
    beat = _wait_for_action(dying, pb.CLIENT_ACTION_TRAIN)
    dying.pull_task(run_id, beat.round)  # ... and the process dies: no update, no more heartbeats
    dying.close()
    reports = clients.join(timeout=120)

    status = coordinator.status(run_id)
    assert status.state == pb.RUN_STATE_COMPLETED
    first, second = status.rounds
    assert (first.round, first.outcome, first.clients_selected, first.updates_accepted) == (
        1, pb.ROUND_OUTCOME_COMPLETED, 3, 2,
    )  # fmt: skip
    assert (second.round, second.clients_selected, second.updates_accepted) == (
        2,
        2,
        2,
    )  # the dead one is gone
    assert f"round 1: no update from ['{dying.client_id}'] before the deadline" in caplog.text
    assert all(report.rounds_trained == [1, 2] for report in reports.values())
    assert coordinator.metric("federated_rounds_total", {"outcome": "completed"}) == 2
    assert coordinator.metric("federated_rounds_total", {"outcome": "timeout"}) == 0


def test_a_round_without_quorum_times_out_and_is_retried(start_coordinator, fl):
    coordinator = start_coordinator(max_round_attempts=2)
    data = load_client_data("digits", "iid", 0, 4)
    with FederatedClient(coordinator.service.target, fl.CLIENT_TOKEN, data, "digits") as client:
        client.register()
        run_id = coordinator.start(fl.run_config(num_rounds=1, round_timeout_seconds=0.5)).run_id
        _wait_for_action(client, pb.CLIENT_ACTION_TRAIN)  # selected, but never reports
        deadline = time.monotonic() + 30
        while (status := coordinator.status(run_id)).state == pb.RUN_STATE_RUNNING:
            client.heartbeat()  # stays connected, so every attempt selects it again
            assert time.monotonic() < deadline, f"the run did not fail:\n{status}"
            time.sleep(0.05)
    assert status.run_id == run_id and status.state == pb.RUN_STATE_FAILED
    assert [(r.round, r.outcome) for r in status.rounds] == [(1, pb.ROUND_OUTCOME_TIMEOUT)] * 2
    assert "timed out 2 times" in status.message
    assert coordinator.metric("federated_rounds_total", {"outcome": "timeout"}) == 2


@pytest.mark.parametrize("first_part", ["chunk", "none"])
def test_push_update_without_a_header_is_invalid_argument(start_coordinator, fl, first_part):
    import grpc

    coordinator = start_coordinator()
    messages = (
        [] if first_part == "none" else [pb.PushUpdateRequest(chunk={"id": "x", "index": 0, "data": b"1"})]
    )
    with pytest.raises(grpc.RpcError) as error:
        coordinator.stub.PushUpdate(iter(messages), metadata=fl.CLIENT_MD, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details().startswith("header")
