"""Weighted averaging: hand-computed cases and the fast kernel against the stacked reference."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from trillium.federated.core.aggregation import (
    state_add,
    state_sub,
    weighted_average,
    weighted_average_reference,
)
from trillium.federated.core.types import state_from_numpy, state_to_numpy


def _state(w: float, b: list[float]) -> OrderedDict[str, torch.Tensor]:
    return OrderedDict(weight=torch.tensor([[w]]), bias=torch.tensor(b), steps=torch.tensor(3))


def test_weighted_average_hand_computed() -> None:
    states = [_state(1.0, [0.0, 2.0]), _state(4.0, [3.0, -1.0])]
    out = weighted_average(states, [1, 2])
    assert torch.allclose(out["weight"], torch.tensor([[3.0]]))  # (1·1 + 2·4) / 3
    assert torch.allclose(out["bias"], torch.tensor([2.0, 0.0]))  # (0 + 6)/3, (2 − 2)/3
    assert out["steps"].dtype == torch.int64 and int(out["steps"]) == 3


@pytest.mark.parametrize("num_clients", [1, 3, 17])
def test_fast_matches_reference(num_clients: int) -> None:
    gen = torch.Generator().manual_seed(num_clients)
    states = [
        OrderedDict(a=torch.randn(4, 3, generator=gen), b=torch.randn(5, generator=gen))
        for _ in range(num_clients)
    ]
    weights = torch.rand(num_clients, generator=gen).add(0.1).tolist()
    fast, ref = weighted_average(states, weights), weighted_average_reference(states, weights)
    for name in fast:
        torch.testing.assert_close(fast[name], ref[name], rtol=1e-6, atol=1e-6)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="states"):
        weighted_average([], [])
    with pytest.raises(ValueError, match="weights"):
        weighted_average([_state(1.0, [0.0, 0.0])], [1, 2])
    with pytest.raises(ValueError, match="weights"):
        weighted_average([_state(1.0, [0.0, 0.0])], [0])
    other = OrderedDict(bias=torch.zeros(2), weight=torch.zeros(1, 1), steps=torch.tensor(0))
    with pytest.raises(ValueError, match="same parameter names"):
        weighted_average([_state(1.0, [0.0, 0.0]), other], [1, 1])


def test_state_arithmetic_and_numpy_round_trip() -> None:
    a, b = _state(2.0, [1.0, 1.0]), _state(0.5, [0.0, 3.0])
    assert torch.allclose(state_sub(a, b)["bias"], torch.tensor([1.0, -2.0]))
    assert torch.allclose(state_add(a, b, 2.0)["weight"], torch.tensor([[3.0]]))
    back = state_from_numpy(state_to_numpy(a))
    assert list(back) == list(a)
    assert all(torch.equal(back[k], a[k]) for k in a)
