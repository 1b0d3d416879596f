"""SCAFFOLD (Karimireddy et al. 2020, arXiv 1910.06378): control variates correct client drift.

Client: step ``y ← y − η(g(y) − c_i + c)``; option II ``c_i⁺ = c_i − c + (x − y)/(Kη)``; upload
``y`` (the server forms ``Δy = y − x``) and ``Δc = c_i⁺ − c_i``; keep ``c_i ← c_i⁺`` (persisted client
state). Server: ``x ← x + η_g · mean_{i∈S} Δy_i``; ``c ← c + (1/N) Σ_{i∈S} Δc_i``; c, c_i start at 0.

With SGD momentum β the paper's ``Kη`` is replaced by ``Kη/(1 − β)``, the effective step length of
heavy-ball SGD (our choice; the paper assumes plain SGD, where both coincide at β = 0).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from trillium.federated.core.aggregation import state_add, state_sub, weighted_average, zeros_like_state
from trillium.federated.core.data.datasets import ArrayDataset
from trillium.federated.core.hooks import ClientHooks
from trillium.federated.core.strategies.base import Strategy
from trillium.federated.core.types import (
    ClientInstruction,
    ClientResult,
    ModelState,
    Scalar,
    StrategyState,
    TensorMap,
    clone_state,
)

SERVER_C = "server_c/"
CLIENT_C = "client_c/"
DELTA_C = "delta_c/"


def _prefixed(prefix: str, state: Mapping[str, torch.Tensor]) -> TensorMap:
    return {prefix + name: tensor for name, tensor in state.items()}


def _unprefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> ModelState:
    return OrderedDict((k[len(prefix) :], v) for k, v in tensors.items() if k.startswith(prefix))


@dataclass(kw_only=True)
class Scaffold(Strategy):
    """Server half: keeps the server control variate ``c`` over all ``num_clients`` clients."""

    name = "scaffold"
    num_clients: int
    server_lr: float = 1.0
    control: ModelState = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if self.num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {self.num_clients}")
        if self.server_lr <= 0:
            raise ValueError(f"server_lr must be positive, got {self.server_lr}")

    def _ensure_control(self, global_weights: ModelState) -> None:
        if not self.control:
            self.control = zeros_like_state(global_weights)

    def client_config(self) -> dict[str, Scalar]:
        """Nothing beyond the local SGD settings."""
        return {}

    def client_payload(self, server_round: int, global_weights: ModelState) -> TensorMap:
        """The server control variate ``c`` (doubles downlink traffic, as in the paper)."""
        self._ensure_control(global_weights)
        return _prefixed(SERVER_C, self.control)

    def aggregate(
        self, server_round: int, global_weights: ModelState, results: Mapping[str, ClientResult]
    ) -> ModelState:
        """``x ← x + η_g mean Δy``; ``c ← c + (1/N) Σ Δc``."""
        self._ensure_control(global_weights)
        if not results:
            return clone_state(global_weights)
        ordered = [results[cid] for cid in sorted(results)]
        equal = [1.0] * len(ordered)
        mean_y = weighted_average([r.weights for r in ordered], equal)  # mean Δy = mean y − x
        new_weights = state_add(global_weights, state_sub(mean_y, global_weights), self.server_lr)
        deltas = [_unprefixed(DELTA_C, r.extras) for r in ordered]
        mean_dc = weighted_average(deltas, equal)
        self.control = state_add(self.control, mean_dc, len(ordered) / self.num_clients)
        return new_weights

    def state_dict(self) -> StrategyState:
        """``c`` as named tensors plus hyperparameters."""
        return StrategyState(
            tensors=_prefixed(SERVER_C, clone_state(self.control)),
            scalars={"num_clients": self.num_clients, "server_lr": self.server_lr},
        )

    def load_state_dict(self, state: StrategyState) -> None:
        """Restore ``c`` and hyperparameters."""
        self.control = clone_state(_unprefixed(SERVER_C, state.tensors))
        self.num_clients = int(state.scalars["num_clients"])
        self.server_lr = float(state.scalars["server_lr"])


class ScaffoldClient(ClientHooks):
    """Client half: corrects every gradient by ``c − c_i`` and updates ``c_i`` (option II).

    ``client_state`` is the client's persisted tensors; ``c_i`` lives there under ``client_c/<name>``
    and is updated in place at the end of training.
    """

    def __init__(
        self, global_weights: ModelState, server_c: ModelState, client_state: TensorMap, momentum: float
    ) -> None:
        self.global_weights = clone_state(global_weights)
        self.server_c = server_c
        self.client_state = client_state
        self.momentum = momentum
        stored = _unprefixed(CLIENT_C, client_state)
        self.client_c = stored if stored else zeros_like_state(server_c)

    @classmethod
    def from_instruction(cls, instruction: ClientInstruction, client_state: TensorMap) -> ScaffoldClient:
        """Reads ``c`` from the payload and ``c_i`` from ``client_state`` (zeros the first time)."""
        server_c = _unprefixed(SERVER_C, instruction.payload)
        if not server_c:
            raise ValueError("instruction.payload must hold the server control variate for SCAFFOLD")
        momentum = float(instruction.config.get("local_momentum", 0.0))
        return cls(instruction.weights, server_c, client_state, momentum)

    def before_step(self, model: nn.Module) -> None:
        """``g ← g − c_i + c``."""
        for name, param in model.named_parameters():
            if param.grad is not None:
                param.grad.add_(self.server_c[name] - self.client_c[name])

    def on_train_end(self, model: nn.Module, data: ArrayDataset, num_steps: int, lr: float) -> TensorMap:
        """Option II update of ``c_i``; returns ``Δc`` and stores ``c_i⁺`` in ``client_state``."""
        effective_lr = lr / (1.0 - self.momentum)
        trained = model.state_dict()
        delta_c: TensorMap = {}
        for name, c_i in self.client_c.items():
            drift = (self.global_weights[name] - trained[name].detach()) / (max(num_steps, 1) * effective_lr)
            c_plus = c_i - self.server_c[name] + drift
            delta_c[DELTA_C + name] = c_plus - c_i
            self.client_state[CLIENT_C + name] = c_plus
        return delta_c
