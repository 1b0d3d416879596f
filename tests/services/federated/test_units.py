"""Unit checks of the pure parts: run configs, wire helpers, checkpoints, update checks, client data."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch

from trillium.federated.core.strategies import FedCFA, FedDyn, FedProx, Scaffold
from trillium.federated.core.types import ClientResult, StrategyState
from trillium.federated.service.checkpoint import CheckpointStore, RoundCheckpoint
from trillium.federated.service.client_runtime import load_client_data, parse_partition
from trillium.federated.service.coordinator import CoordinatorOptions
from trillium.federated.service.run_config import RunSpec
from trillium.federated.service.updates import UpdateRejectedError, build_result, expected_extra_shapes
from trillium.federated.service.wire import (
    PayloadReceiver,
    pack_payload,
)
from trillium.servicekit.errors import ValidationError
from trillium.servicekit.parameters import from_parameter_map, to_parameter_map


def test_run_spec_builds_each_strategy_with_its_parameters(fl):
    cases = {
        "fedprox": ({"mu": 0.5}, lambda s: isinstance(s, FedProx) and s.mu == 0.5),
        "scaffold": (
            {"num_clients": 7, "server_lr": 0.5},
            lambda s: isinstance(s, Scaffold) and s.num_clients == 7,
        ),
        "feddyn": ({"num_clients": 4, "alpha": 0.1}, lambda s: isinstance(s, FedDyn) and s.alpha == 0.1),
        "fedcfa": (
            {"r1": 2.0, "fdc": False, "mean_batch": 8},
            lambda s: isinstance(s, FedCFA) and s.loss_weights == (1.0, 2.0, 5.0) and not s.fdc,
        ),
    }
    for name, (parameters, check) in cases.items():
        spec = RunSpec.from_proto(
            fl.run_config(strategy=name, strategy_parameters={**parameters, "momentum": 0.5})
        )
        strategy = spec.build_strategy()
        assert check(strategy), name
        assert (
            strategy.local.momentum == 0.5 and strategy.local.lr == pytest.approx(0.05) and strategy.seed == 3
        )
        assert RunSpec.from_proto(spec.to_proto()) == spec
        assert RunSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_run_spec_rejects_wrongly_typed_parameters(fl):
    with pytest.raises(ValidationError) as error:
        RunSpec.from_proto(fl.run_config(strategy="scaffold", strategy_parameters={"num_clients": 2.5}))
    assert error.value.field == "config.strategy_parameters.num_clients"


def test_parameter_maps_round_trip_typed_scalars():
    config = {"a": True, "b": 3, "c": 0.25, "d": "x"}
    assert from_parameter_map(to_parameter_map(config), "config") == config
    assert type(from_parameter_map(to_parameter_map({"b": 3}), "config")["b"]) is int


def test_payload_receiver_reassembles_and_checks_announcements():
    tensors = {"w": torch.randn(600, 500), "b": torch.arange(5, dtype=torch.float32)}
    payload = pack_payload("global_weights", tensors, "blob-1", chunk_bytes=1 << 20)
    chunks = list(payload.chunks(1 << 20))
    assert len(chunks) == 2 == payload.header.chunk_count
    announced = [type("P", (), {"name": payload.name, "blob": payload.header})()]
    receiver = PayloadReceiver(announced, max_bytes=1 << 24)
    for chunk in chunks:
        receiver.add(chunk)
    received = receiver.finish()["global_weights"]
    assert all(torch.equal(received[k], tensors[k]) for k in tensors)
    with pytest.raises(ValidationError) as error:
        PayloadReceiver(announced, max_bytes=1 << 24).add(type(chunks[0])(id="other", index=0, data=b""))
    assert error.value.field == "chunk.id"
    truncated = PayloadReceiver(announced, max_bytes=1 << 24)
    truncated.add(chunks[0])
    with pytest.raises(ValidationError, match="received"):
        truncated.finish()


def _checkpoint(run_id: str, rounds: int, value: float) -> RoundCheckpoint:
    weights = OrderedDict([("layer.weight", torch.full((2, 3), value)), ("layer.bias", torch.zeros(2))])
    strategy = StrategyState({"server_c/layer.bias": torch.ones(2) * value}, {"num_clients": 2})
    return RoundCheckpoint(run_id, rounds, weights, strategy, {"summaries": [{"round": rounds}]})


def test_checkpoints_round_trip_point_at_the_latest_and_prune(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    assert store.load("run-a") is None
    for rounds in (1, 2, 3):
        store.save(_checkpoint("run-a", rounds, float(rounds)))
    loaded = store.load("run-a")
    assert loaded is not None and loaded.completed_rounds == 3
    assert list(loaded.weights) == ["layer.weight", "layer.bias"]
    assert torch.equal(loaded.weights["layer.weight"], torch.full((2, 3), 3.0))
    assert torch.equal(loaded.strategy.tensors["server_c/layer.bias"], torch.full((2,), 3.0))
    assert loaded.strategy.scalars == {"num_clients": 2} and loaded.state["summaries"] == [{"round": 3}]
    assert sorted(p.name for p in store.run_dir("run-a").glob("round-*")) == ["round-000002", "round-000003"]
    assert store.load("run-a", 1) is None


def test_a_crash_while_writing_leaves_the_previous_checkpoint_in_force(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(_checkpoint("run-a", 1, 1.0))
    # A crash after the staging directory was filled but before the rename / pointer update:
    staging = store.run_dir("run-a") / ".round-000002.crashed"
    staging.mkdir()
    (staging / "weights.safetensors").write_bytes(b"partial")
    loaded = store.load("run-a")
    assert loaded is not None and loaded.completed_rounds == 1
    # A crash after the rename but before latest.json: the next save of that round replaces it.
    store.round_dir("run-a", 2).mkdir()
    assert store.load("run-a").completed_rounds == 1
    store.save(_checkpoint("run-a", 2, 2.0))
    assert store.load("run-a").completed_rounds == 2


def test_update_checks_name_the_offending_field():
    weights = OrderedDict([("w", torch.zeros(2, 2)), ("b", torch.zeros(2))])
    expected = expected_extra_shapes("fedcfa", weights, (1, 8, 8), 10)
    extras = {"mean_x": torch.zeros(3, 1, 8, 8), "mean_y": torch.zeros(3, 10)}
    result = build_result(
        {"weights": dict(weights), "extras": extras},
        5,
        {"loss": 1.0},
        weights,
        expected,
        extras_payload="extras",
    )
    assert isinstance(result, ClientResult) and list(result.weights) == ["w", "b"]
    bad_cases = [
        (
            {"weights": dict(weights), "extras": {**extras, "mean_y": torch.zeros(4, 10)}},
            {},
            "payloads.extras: leading sizes",
        ),
        (
            {"weights": dict(weights), "extras": {**extras, "mean_y": torch.zeros(3, 9)}},
            {},
            "payloads.extras['mean_y']: shape",
        ),
        (
            {"weights": {**weights, "w": torch.zeros(2, 2, dtype=torch.float64)}, "extras": extras},
            {},
            "payloads.weights['w']: dtype",
        ),
        ({"weights": {"w": weights["w"]}, "extras": extras}, {}, "payloads.weights: missing ['b']"),
        ({"extras": extras}, {}, "header.payloads: the 'weights' payload is missing"),
        ({"weights": dict(weights), "extras": extras, "other": {}}, {}, "header.payloads: unknown"),
        ({"weights": dict(weights), "extras": extras}, {"loss": float("nan")}, "header.metrics['loss']"),
    ]
    for payloads, metrics, reason in bad_cases:
        with pytest.raises(UpdateRejectedError) as error:
            build_result(payloads, 5, metrics, weights, expected)
        assert error.value.reason.startswith(reason), (reason, error.value.reason)


def test_client_shards_are_disjoint_and_reproducible():
    shards = [load_client_data("digits", "dirichlet:0.3", i, 4, seed=1) for i in range(4)]
    again = load_client_data("digits", "dirichlet:0.3", 2, 4, seed=1)
    assert torch.equal(again.x, shards[2].x)
    rows = {tuple(np.round(x.flatten().numpy(), 4)) for shard in shards for x in shard.x}
    assert sum(len(s) for s in shards) <= 1348 and len(rows) >= 0.99 * sum(len(s) for s in shards)
    assert parse_partition("labels:2") == ("labels", 2.0)
    for bad in ("dirichlet", "zipf:1", "iid:3"):
        with pytest.raises(ValueError, match="partition"):
            parse_partition(bad)
    with pytest.raises(ValueError, match="client_index"):
        load_client_data("digits", "iid", 4, 4)


def test_coordinator_options_from_env():
    options = CoordinatorOptions.from_env(
        {"TRILLIUM_FL_HEARTBEAT_SECONDS": "0.5", "TRILLIUM_FL_KEEP_CHECKPOINTS": "7"}
    )
    assert options.heartbeat_seconds == 0.5 and options.keep_checkpoints == 7
    with pytest.raises(ValueError, match="TRILLIUM_FL_MAX_ROUND_ATTEMPTS"):
        CoordinatorOptions.from_env({"TRILLIUM_FL_MAX_ROUND_ATTEMPTS": "many"})
    with pytest.raises(ValueError, match="chunk_bytes"):
        CoordinatorOptions(chunk_bytes=10)
