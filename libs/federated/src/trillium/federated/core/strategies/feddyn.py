"""FedDyn (Acar et al. 2021, arXiv 2111.04263): dynamic regularisation aligns local and global optima.

Client: ``min_θ L_k(θ) − ⟨∇L_k(θ_k^{t−1}), θ⟩ + (α/2)‖θ − θ^{t−1}‖²``, then
``∇L_k ← ∇L_k − α(θ_k^t − θ^{t−1})`` (persisted client state, zeros at first).
Server: ``h ← h − α(1/N) Σ_{k∈S}(θ_k − θ^{t−1})``; ``θ^t = mean_{k∈S} θ_k − h/α``.
Uses ``Σ_k(θ_k − θ)``, not FedLab's ``Σθ_k − θ`` slip.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
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

SERVER_H = "server_h/"
CLIENT_GRAD = "feddyn_grad/"


@dataclass(kw_only=True)
class FedDyn(Strategy):
    """Server half: keeps ``h``; ``alpha`` ≈ 0.01–0.1."""

    name = "feddyn"
    num_clients: int
    alpha: float = 0.01
    h: ModelState = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if self.num_clients < 1:
            raise ValueError(f"num_clients must be >= 1, got {self.num_clients}")
        if self.alpha <= 0:
            raise ValueError(f"alpha must be positive, got {self.alpha}")

    def client_config(self) -> dict[str, Scalar]:
        """Ships ``feddyn_alpha``."""
        return {"feddyn_alpha": self.alpha}

    def aggregate(
        self, server_round: int, global_weights: ModelState, results: Mapping[str, ClientResult]
    ) -> ModelState:
        """``h ← h − α/N Σ(θ_k − θ)``; ``θ ← mean θ_k − h/α``."""
        if not self.h:
            self.h = zeros_like_state(global_weights)
        if not results:
            return clone_state(global_weights)
        count = len(results)
        mean_theta = weighted_average([results[cid].weights for cid in sorted(results)], [1.0] * count)
        # Σ_k(θ_k − θ) = K·(mean θ_k − θ)
        scale = -self.alpha * count / self.num_clients
        self.h = state_add(self.h, state_sub(mean_theta, global_weights), scale)
        return state_add(mean_theta, self.h, -1.0 / self.alpha)

    def state_dict(self) -> StrategyState:
        """``h`` plus hyperparameters."""
        tensors = {SERVER_H + name: t.clone() for name, t in self.h.items()}
        return StrategyState(tensors=tensors, scalars={"num_clients": self.num_clients, "alpha": self.alpha})

    def load_state_dict(self, state: StrategyState) -> None:
        """Restore ``h`` and hyperparameters."""
        self.h = OrderedDict(
            (k[len(SERVER_H) :], v.clone()) for k, v in state.tensors.items() if k.startswith(SERVER_H)
        )
        self.num_clients = int(state.scalars["num_clients"])
        self.alpha = float(state.scalars["alpha"])


class FedDynClient(ClientHooks):
    """Client half: linear + quadratic penalty; the stored gradient lives in ``client_state``."""

    def __init__(self, global_weights: ModelState, client_state: TensorMap, alpha: float) -> None:
        self.global_weights = clone_state(global_weights)
        self.client_state = client_state
        self.alpha = alpha
        self.grad = OrderedDict(
            (name, client_state.get(CLIENT_GRAD + name, torch.zeros_like(t)))
            for name, t in global_weights.items()
        )

    @classmethod
    def from_instruction(cls, instruction: ClientInstruction, client_state: TensorMap) -> FedDynClient:
        """``α`` from ``config["feddyn_alpha"]``."""
        return cls(instruction.weights, client_state, float(instruction.config["feddyn_alpha"]))

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``CE − ⟨∇L_k(θ_k^{t−1}), θ⟩ + (α/2)‖θ − θ^{t−1}‖²``."""
        ce = F.cross_entropy(model(x), y)
        linear = torch.zeros(())
        quadratic = torch.zeros(())
        for name, param in model.named_parameters():
            linear = linear + (self.grad[name] * param).sum()
            quadratic = quadratic + (param - self.global_weights[name]).pow(2).sum()
        return ce - linear + 0.5 * self.alpha * quadratic, {"ce": float(ce.detach())}

    def on_train_end(self, model: nn.Module, data: ArrayDataset, num_steps: int, lr: float) -> TensorMap:
        """``∇L_k ← ∇L_k − α(θ_k^t − θ^{t−1})``, stored in ``client_state``; nothing extra uploaded."""
        trained = model.state_dict()
        for name in self.grad:
            updated = self.grad[name] - self.alpha * (trained[name].detach() - self.global_weights[name])
            self.client_state[CLIENT_GRAD + name] = updated
        return {}
