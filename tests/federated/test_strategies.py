"""Strategy math against hand-computed cases, client hooks, configuration and checkpoint round trips."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trillium.federated.core import (
    ClientResult,
    FedAvg,
    FedCFA,
    FedDyn,
    FedProx,
    LocalTrainConfig,
    Scaffold,
    Strategy,
    make_client_hooks,
    train_local,
)
from trillium.federated.core.data import ArrayDataset
from trillium.federated.core.strategies.fedprox import proximal_term
from trillium.federated.core.types import ClientInstruction

PLAIN_SGD = LocalTrainConfig(lr=0.1, momentum=0.0, weight_decay=0.0, batch_size=1000, epochs=1)


def _state(values: list[float]) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict(w=torch.tensor(values))


def _result(values: list[float], n: int, **extras: torch.Tensor) -> ClientResult:
    return ClientResult(weights=_state(values), num_examples=n, extras=dict(extras))


def _linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


def _data(seed: int = 0, n: int = 16) -> ArrayDataset:
    gen = torch.Generator().manual_seed(seed)
    return ArrayDataset(torch.randn(n, 3, generator=gen), torch.randint(0, 2, (n,), generator=gen), 2)


def _full_batch_grad(model: nn.Module, data: ArrayDataset) -> dict[str, torch.Tensor]:
    model.zero_grad()
    F.cross_entropy(model(data.x), data.y).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_fedavg_is_sample_weighted() -> None:
    out = FedAvg().aggregate(
        0, _state([0.0, 0.0]), {"a": _result([1.0, 2.0], 1), "b": _result([4.0, -1.0], 3)}
    )
    assert torch.allclose(out["w"], torch.tensor([3.25, -0.25]))


def test_fedavg_without_results_keeps_the_model() -> None:
    glob = _state([1.0, 2.0])
    out = FedAvg().aggregate(0, glob, {})
    assert torch.equal(out["w"], glob["w"]) and out["w"] is not glob["w"]


def test_fedprox_proximal_gradient_is_mu_times_distance() -> None:
    model = _linear()
    anchor = {name: p.detach() + 0.5 for name, p in model.named_parameters()}
    proximal_term(model, anchor, mu=0.2).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 0.2 * (p.detach() - anchor[name]))
    value = proximal_term(model, anchor, mu=0.2).detach()
    assert float(value) == pytest.approx(0.5 * 0.2 * 0.25 * sum(p.numel() for p in model.parameters()))


def test_fedprox_client_stays_closer_to_the_global_model() -> None:
    data = _data()
    distances = {}
    for mu in (0.0, 1.0):
        model = _linear()
        glob = OrderedDict((k, v.clone()) for k, v in model.state_dict().items())
        instruction = FedProx(mu=mu, local=PLAIN_SGD).configure_round(0, glob, ["c"])["c"]
        config = LocalTrainConfig(lr=0.5, momentum=0.0, weight_decay=0.0, batch_size=4, epochs=3)
        train_local(model, data, config, make_client_hooks(instruction))
        distances[mu] = sum(float((model.state_dict()[k] - glob[k]).norm()) for k in glob)
    assert distances[1.0] < 0.7 * distances[0.0]


def test_scaffold_client_step_and_control_variate_option_two() -> None:
    model, data = _linear(), _data()
    x = OrderedDict((k, v.clone()) for k, v in model.state_dict().items())
    c = OrderedDict((k, torch.full_like(v, 0.3)) for k, v in x.items())
    c_i = {f"client_c/{k}": torch.full_like(v, -0.1) for k, v in x.items()}
    grad = _full_batch_grad(_linear(), data)
    strategy = Scaffold(num_clients=4, local=PLAIN_SGD)
    strategy.control = c
    instruction = strategy.configure_round(0, x, ["k"])["k"]
    client_state = dict(c_i)
    result = train_local(model, data, PLAIN_SGD, make_client_hooks(instruction, client_state))
    for name in x:
        expected_y = x[name] - 0.1 * (grad[name] - (-0.1) + 0.3)  # y ← y − η(g − c_i + c)
        torch.testing.assert_close(result.weights[name], expected_y)
        # one step: c_i⁺ = c_i − c + (x − y)/(Kη) = g(x)
        torch.testing.assert_close(client_state[f"client_c/{name}"], grad[name])
        torch.testing.assert_close(result.extras[f"delta_c/{name}"], grad[name] + 0.1)


def test_scaffold_server_update() -> None:
    strategy = Scaffold(num_clients=4, server_lr=0.5)
    glob = _state([1.0, 1.0])
    strategy.configure_round(0, glob, ["a", "b"])
    results = {
        "a": _result([3.0, 1.0], 10, **{"delta_c/w": torch.tensor([1.0, 2.0])}),
        "b": _result([1.0, -1.0], 90, **{"delta_c/w": torch.tensor([3.0, 2.0])}),
    }
    out = strategy.aggregate(0, glob, results)
    # x + η_g · mean Δy (unweighted): Δy = [2, 0], [0, −2]
    torch.testing.assert_close(out["w"], torch.tensor([1.5, 0.5]))
    torch.testing.assert_close(strategy.control["w"], torch.tensor([1.0, 1.0]))  # (1/N)·Σ Δc


def test_feddyn_server_update() -> None:
    strategy = FedDyn(num_clients=4, alpha=0.1)
    glob = _state([1.0])
    out = strategy.aggregate(0, glob, {"a": _result([2.0], 1), "b": _result([4.0], 1)})
    # h = −0.1/4 · ((2−1) + (4−1)) = −0.1; θ = mean(2, 4) − h/α = 3 + 1
    torch.testing.assert_close(strategy.h["w"], torch.tensor([-0.1]))
    torch.testing.assert_close(out["w"], torch.tensor([4.0]))


def test_feddyn_client_updates_its_gradient_state() -> None:
    model, data = _linear(), _data()
    glob = OrderedDict((k, v.clone()) for k, v in model.state_dict().items())
    instruction = FedDyn(num_clients=2, alpha=0.1, local=PLAIN_SGD).configure_round(0, glob, ["k"])["k"]
    state: dict[str, torch.Tensor] = {}
    grad = _full_batch_grad(_linear(), data)
    result = train_local(model, data, PLAIN_SGD, make_client_hooks(instruction, state))
    for name in glob:
        # first round: the linear and quadratic terms are zero at θ^{t−1}, so one step is plain SGD
        torch.testing.assert_close(result.weights[name], glob[name] - 0.1 * grad[name])
        torch.testing.assert_close(state[f"feddyn_grad/{name}"], -0.1 * (result.weights[name] - glob[name]))


def _all_strategies() -> list[Strategy]:
    return [FedAvg(), FedProx(mu=0.1), Scaffold(num_clients=3), FedDyn(num_clients=3), FedCFA()]


@pytest.mark.parametrize("strategy", _all_strategies(), ids=lambda s: s.name)
def test_configure_round_is_serialisable_and_seeded_per_client(strategy: Strategy) -> None:
    glob = _state([0.0, 1.0])
    instructions = strategy.configure_round(2, glob, ["a", "b"])
    assert set(instructions) == {"a", "b"}
    for instruction in instructions.values():
        json.dumps(instruction.config)
        assert instruction.config["strategy"] == strategy.name and instruction.config["round"] == 2
        assert all(isinstance(t, torch.Tensor) for t in instruction.payload.values())
    assert instructions["a"].config["local_seed"] != instructions["b"].config["local_seed"]
    again = strategy.configure_round(2, glob, ["b"])
    assert again["b"].config["local_seed"] == instructions["b"].config["local_seed"]
    with pytest.raises(ValueError, match="client_ids"):
        strategy.configure_round(0, glob, ["a", "a"])


@pytest.mark.parametrize("strategy", _all_strategies(), ids=lambda s: s.name)
def test_state_dict_round_trip(strategy: Strategy) -> None:
    glob = _state([0.0, 1.0])
    strategy.configure_round(0, glob, ["a"])
    extras = {"delta_c/w": torch.tensor([0.5, 0.5]), "mean_x": torch.ones(2, 3), "mean_y": torch.eye(2)}
    strategy.aggregate(0, glob, {"a": _result([2.0, 2.0], 5, **extras)})
    saved = strategy.state_dict()
    json.dumps(saved.scalars)
    fresh = type(strategy)(**({"num_clients": 1} if isinstance(strategy, Scaffold | FedDyn) else {}))
    fresh.load_state_dict(saved)
    assert fresh.state_dict().scalars == saved.scalars
    restored = fresh.state_dict().tensors
    assert set(restored) == set(saved.tensors)
    assert all(torch.equal(restored[k], saved.tensors[k]) for k in saved.tensors)
    assert fresh.client_payload(1, glob).keys() == strategy.client_payload(1, glob).keys()


def test_stateful_strategies_checkpoint_their_state() -> None:
    scaffold, cfa = Scaffold(num_clients=2), FedCFA()
    glob = _state([0.0])
    scaffold.configure_round(0, glob, ["a"])
    scaffold.aggregate(0, glob, {"a": _result([1.0], 1, **{"delta_c/w": torch.tensor([4.0])})})
    assert torch.equal(scaffold.state_dict().tensors["server_c/w"], torch.tensor([2.0]))
    cfa.aggregate(0, glob, {"a": _result([1.0], 1, mean_x=torch.ones(3, 2), mean_y=torch.ones(3, 4))})
    assert cfa.state_dict().tensors["global_x"].shape == (3, 2)


def test_unknown_strategy_name_raises() -> None:
    instruction = ClientInstruction(weights=_state([0.0]), config={"strategy": "nope"})
    with pytest.raises(ValueError, match="strategy"):
        make_client_hooks(instruction)


def test_bad_hyperparameters_raise() -> None:
    with pytest.raises(ValueError, match="mu"):
        FedProx(mu=-1.0)
    with pytest.raises(ValueError, match="num_clients"):
        Scaffold(num_clients=0)
    with pytest.raises(ValueError, match="top_k_fraction"):
        FedCFA(top_k_fraction=1.5)
    with pytest.raises(ValueError, match="lr"):
        LocalTrainConfig(lr=0.0)
