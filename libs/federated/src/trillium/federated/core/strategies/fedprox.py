"""FedProx (Li et al. 2020, arXiv 1812.06127): a proximal term keeps local models near the global one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trillium.federated.core.hooks import ClientHooks
from trillium.federated.core.strategies.base import Strategy, fedavg_aggregate
from trillium.federated.core.types import ClientInstruction, ClientResult, ModelState, Scalar, TensorMap


@dataclass(kw_only=True)
class FedProx(Strategy):
    """Client minimises ``F_k(w) + (μ/2)‖w − w^t‖²`` (squared norm); server = FedAvg.

    ``mu`` ∈ {0.001, 0.01, 0.1, 1} in the paper's sweeps.
    """

    name = "fedprox"
    mu: float = 0.01

    def __post_init__(self) -> None:
        if self.mu < 0:
            raise ValueError(f"mu must be >= 0, got {self.mu}")

    def client_config(self) -> dict[str, Scalar]:
        """Ships ``proximal_mu``."""
        return {"proximal_mu": self.mu}

    def aggregate(
        self, server_round: int, global_weights: ModelState, results: Mapping[str, ClientResult]
    ) -> ModelState:
        """Sample-weighted average, as FedAvg."""
        return fedavg_aggregate(global_weights, results)


def proximal_term(model: nn.Module, anchor: Mapping[str, torch.Tensor], mu: float) -> torch.Tensor:
    """``(μ/2) Σ_p ‖p − anchor_p‖²`` over the trainable parameters; its gradient is ``μ(p − anchor_p)``."""
    total = torch.zeros(())
    for name, param in model.named_parameters():
        total = total + (param - anchor[name]).pow(2).sum()
    return 0.5 * mu * total


class FedProxClient(ClientHooks):
    """Cross-entropy plus the proximal term around the received global weights."""

    def __init__(self, anchor: Mapping[str, torch.Tensor], mu: float) -> None:
        self.anchor = {name: tensor.detach().clone() for name, tensor in anchor.items()}
        self.mu = mu

    @classmethod
    def from_instruction(cls, instruction: ClientInstruction, client_state: TensorMap) -> FedProxClient:
        """Anchor = the instruction's global weights, ``μ`` = ``config["proximal_mu"]``."""
        return cls(instruction.weights, float(instruction.config["proximal_mu"]))

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``CE + (μ/2)‖w − w^t‖²``."""
        ce = F.cross_entropy(model(x), y)
        prox = proximal_term(model, self.anchor, self.mu)
        return ce + prox, {"ce": float(ce.detach()), "proximal": float(prox.detach())}
