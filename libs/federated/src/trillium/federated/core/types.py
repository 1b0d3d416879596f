"""Transport-free message types exchanged between a coordinator and its clients.

Everything here is a named tensor or a JSON-able scalar, so a gRPC layer can serialise it without
knowing which strategy produced it (arrays as named chunks, scalars as JSON).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

Scalar = bool | int | float | str
ModelState = OrderedDict[str, torch.Tensor]
"""A model's parameters by name, in ``state_dict`` order."""
TensorMap = dict[str, torch.Tensor]
"""Named tensors: strategy payloads, client extras, persisted client state."""


@dataclass
class ClientInstruction:
    """What the server sends one client for one round.

    ``weights``: the global model; ``config``: JSON-able scalars (strategy name, local training
    hyperparameters, seed, strategy hyperparameters); ``payload``: strategy tensors (SCAFFOLD's
    server control variate, FedCFA's global mean-data pool).
    """

    weights: ModelState
    config: dict[str, Scalar]
    payload: TensorMap = field(default_factory=dict)


@dataclass
class ClientResult:
    """What one client returns after local training.

    ``weights``: the locally trained model (strategies compute deltas against the global model they
    sent); ``num_examples``: local training set size (aggregation weight); ``metrics``: JSON-able
    scalars; ``extras``: strategy tensors (SCAFFOLD's ``delta_c``, FedCFA's chunk means).
    """

    weights: ModelState
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)
    extras: TensorMap = field(default_factory=dict)


@dataclass
class StrategyState:
    """A strategy's checkpointable state: named tensors plus JSON-able scalars."""

    tensors: TensorMap = field(default_factory=dict)
    scalars: dict[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            json.dumps(self.scalars)
        except TypeError as error:
            raise ValueError(f"scalars must be JSON-serialisable: {error}") from error


def clone_state(state: ModelState) -> ModelState:
    """A detached deep copy of ``state`` (safe to keep across training steps)."""
    return OrderedDict((name, tensor.detach().clone()) for name, tensor in state.items())


def state_to_numpy(state: ModelState | TensorMap) -> OrderedDict[str, np.ndarray]:
    """Named tensors as named numpy arrays, order preserved (for a wire format)."""
    return OrderedDict((name, tensor.detach().cpu().numpy()) for name, tensor in state.items())


def state_from_numpy(arrays: dict[str, np.ndarray]) -> ModelState:
    """Inverse of :func:`state_to_numpy`."""
    return OrderedDict((name, torch.from_numpy(np.array(array, copy=True))) for name, array in arrays.items())
