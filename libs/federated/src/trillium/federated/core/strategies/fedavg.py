"""FedAvg (McMahan et al. 2017, arXiv 1602.05629): local SGD, sample-weighted model average."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from trillium.federated.core.hooks import ClientHooks
from trillium.federated.core.strategies.base import Strategy, fedavg_aggregate
from trillium.federated.core.types import ClientInstruction, ClientResult, ModelState, TensorMap


@dataclass(kw_only=True)
class FedAvg(Strategy):
    """``w^{t+1} = Σ_{k∈S_t} (n_k / Σ_{j∈S_t} n_j) · w_k``."""

    name = "fedavg"

    def aggregate(
        self, server_round: int, global_weights: ModelState, results: Mapping[str, ClientResult]
    ) -> ModelState:
        """Sample-weighted average of the client models."""
        return fedavg_aggregate(global_weights, results)


class FedAvgClient(ClientHooks):
    """Plain local cross-entropy SGD."""

    @classmethod
    def from_instruction(cls, instruction: ClientInstruction, client_state: TensorMap) -> FedAvgClient:
        """Build from a round's instruction (FedAvg needs nothing from it)."""
        return cls()
