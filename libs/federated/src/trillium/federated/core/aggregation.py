"""Aggregation kernels over model states: a streaming weighted average and its slow reference.

The fast path accumulates in place, one client at a time, so memory stays O(model size) even with
thousands of simulated clients; the reference stacks every client and is obviously correct.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch

from trillium.federated.core.types import ModelState


def _check_inputs(states: Sequence[ModelState], weights: Sequence[float]) -> None:
    if len(states) == 0:
        raise ValueError("states must not be empty")
    if len(states) != len(weights):
        raise ValueError(f"weights has {len(weights)} entries but states has {len(states)}")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    keys = list(states[0].keys())
    for state in states[1:]:
        if list(state.keys()) != keys:
            raise ValueError("states must all have the same parameter names in the same order")


def weighted_average(states: Sequence[ModelState], weights: Sequence[float]) -> ModelState:
    """``Σ_k (w_k / Σ_j w_j) · state_k`` per tensor, accumulated in float64 in place.

    Non-floating tensors (integer buffers such as counters) are copied from the first state.
    """
    _check_inputs(states, weights)
    total = float(sum(weights))
    result: ModelState = OrderedDict()
    for name, first in states[0].items():
        if not first.is_floating_point():
            result[name] = first.clone()
            continue
        accumulator = torch.zeros(first.shape, dtype=torch.float64)
        for state, weight in zip(states, weights):
            accumulator.add_(state[name].detach().to(torch.float64), alpha=float(weight) / total)
        result[name] = accumulator.to(first.dtype)
    return result


def weighted_average_reference(states: Sequence[ModelState], weights: Sequence[float]) -> ModelState:
    """Slow, obvious reference for :func:`weighted_average`: stack ``[K, ...]`` and sum."""
    _check_inputs(states, weights)
    w = torch.tensor(weights, dtype=torch.float64)
    w = w / w.sum()
    result: ModelState = OrderedDict()
    for name, first in states[0].items():
        if not first.is_floating_point():
            result[name] = first.clone()
            continue
        stacked = torch.stack([state[name].to(torch.float64) for state in states])  # [K, ...]
        shape = (-1,) + (1,) * first.dim()
        result[name] = (stacked * w.view(shape)).sum(dim=0).to(first.dtype)
    return result


def state_sub(a: ModelState, b: ModelState) -> ModelState:
    """``a − b`` per floating tensor (other tensors taken from ``a``)."""
    return OrderedDict(
        (name, a[name] - b[name] if a[name].is_floating_point() else a[name].clone()) for name in a
    )


def state_add(a: ModelState, b: ModelState, scale: float = 1.0) -> ModelState:
    """``a + scale · b`` per floating tensor (other tensors taken from ``a``)."""
    return OrderedDict(
        (name, a[name] + scale * b[name] if a[name].is_floating_point() else a[name].clone()) for name in a
    )


def zeros_like_state(state: ModelState) -> ModelState:
    """A state of zeros with the same names, shapes and dtypes."""
    return OrderedDict((name, torch.zeros_like(tensor)) for name, tensor in state.items())
