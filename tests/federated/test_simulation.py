"""Client loop and simulation: learning on digits, every strategy through the same loop, failures."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from trillium.federated.core import (
    FedAvg,
    FedCFA,
    FedDyn,
    FedProx,
    LocalTrainConfig,
    ModelSpec,
    Scaffold,
    SimulationConfig,
    Strategy,
    build_model,
    evaluate_model,
    sample_clients,
    simulate,
    train_centralised,
    train_local,
)
from trillium.federated.core.data import ArrayDataset, dirichlet_partition, iid_partition, load_digits

LOCAL = LocalTrainConfig(lr=0.05, momentum=0.9, batch_size=32)
SPEC = ModelSpec("cnn", (1, 8, 8), 10, factors=8, hidden=16)


@pytest.fixture(scope="module")
def digits() -> tuple[list[ArrayDataset], ArrayDataset]:
    train, test = load_digits(seed=0)
    parts = iid_partition(len(train), 4, seed=0)
    return [train.subset(p) for p in parts], test


def _strategies() -> list[Strategy]:
    return [
        FedAvg(local=LOCAL),
        FedProx(mu=0.01, local=LOCAL),
        Scaffold(num_clients=4, local=LOCAL),
        FedDyn(num_clients=4, alpha=0.01, local=LOCAL),
        FedCFA(mean_batch=32, local=LOCAL),
    ]


@pytest.mark.parametrize("strategy", _strategies(), ids=lambda s: s.name)
def test_three_rounds_on_digits_beat_chance(strategy: Strategy, digits) -> None:
    clients, test = digits
    history = simulate(
        strategy, lambda: build_model(SPEC), clients, test, SimulationConfig(rounds=3, progress=False)
    )
    assert [r.round for r in history.records] == [0, 1, 2, 3]
    assert history.final_accuracy > 0.3  # chance is 0.1
    assert history.final_accuracy > history.records[0].accuracy
    assert all(r.num_results == 4 for r in history.records[1:])


def test_simulation_is_deterministic_per_seed(digits) -> None:
    clients, test = digits
    config = SimulationConfig(rounds=2, fraction=0.5, seed=5, progress=False)
    runs = [simulate(FedAvg(local=LOCAL), lambda: build_model(SPEC), clients, test, config) for _ in range(2)]
    assert runs[0].accuracies == runs[1].accuracies
    for name, tensor in runs[0].final_weights.items():
        assert torch.equal(tensor, runs[1].final_weights[name])


def test_sampling_dropouts_and_stragglers(digits) -> None:
    clients, test = digits
    config = SimulationConfig(
        rounds=4, fraction=0.5, min_clients=2, dropout_prob=0.3, straggler_prob=0.5, seed=1, progress=False
    )
    history = simulate(FedAvg(local=LOCAL), lambda: build_model(SPEC), clients, test, config)
    rounds = history.records[1:]
    assert all(r.num_sampled == 2 and r.num_results == 2 - r.num_dropped for r in rounds)
    assert sum(r.num_dropped for r in rounds) > 0 and sum(r.num_stragglers for r in rounds) > 0


def test_sample_clients_follows_fraction_and_minimum() -> None:
    rng = np.random.default_rng(0)
    ids = [f"c{i}" for i in range(10)]
    assert len(sample_clients(ids, 0.25, 1, rng)) == 2
    assert len(sample_clients(ids, 0.1, 3, rng)) == 3
    assert len(set(sample_clients(ids, 1.0, 1, rng))) == 10


def test_straggler_does_a_fraction_of_the_steps(digits) -> None:
    clients, _ = digits
    full = train_local(build_model(SPEC, seed=0), clients[0], LOCAL)
    half = train_local(build_model(SPEC, seed=0), clients[0], dataclasses.replace(LOCAL, work_fraction=0.5))
    steps = math.ceil(len(clients[0]) / 32)
    assert full.metrics["steps"] == steps and half.metrics["steps"] == math.ceil(steps / 2)


def test_local_training_reduces_the_loss(digits) -> None:
    clients, _ = digits
    model = build_model(SPEC, seed=0)
    before = evaluate_model(model, clients[0])["loss"]
    train_local(model, clients[0], dataclasses.replace(LOCAL, epochs=3))
    assert evaluate_model(model, clients[0])["loss"] < 0.7 * before


def test_centralised_baseline_learns(digits) -> None:
    clients, test = digits
    pooled = ArrayDataset.concat(clients)
    history = train_centralised(
        lambda: build_model(SPEC), pooled, test, epochs=2, local=LOCAL, progress=False
    )
    assert len(history.records) == 3 and history.final_accuracy > 0.5
    assert history.rounds_to(0.5) is not None and history.rounds_to(1.01) is None


def test_non_iid_fedavg_still_learns_on_digits() -> None:
    train, test = load_digits(seed=0)
    parts = dirichlet_partition(train.y.numpy(), 5, 0.5, seed=0)
    clients = [train.subset(p) for p in parts]
    config = SimulationConfig(rounds=3, progress=False)
    history = simulate(FedAvg(local=LOCAL), lambda: build_model(SPEC), clients, test, config)
    assert history.final_accuracy > 0.2


def test_bad_simulation_config_raises() -> None:
    with pytest.raises(ValueError, match="rounds"):
        SimulationConfig(rounds=0)
    with pytest.raises(ValueError, match="fraction"):
        SimulationConfig(rounds=1, fraction=0.0)
    with pytest.raises(ValueError, match="dropout_prob"):
        SimulationConfig(rounds=1, dropout_prob=1.0)
