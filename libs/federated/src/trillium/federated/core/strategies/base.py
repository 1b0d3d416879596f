"""The strategy interface (Flower-like: configure / aggregate / evaluate), transport-free.

A strategy is the server half of an algorithm; its client half is a :class:`ClientHooks` subclass
named by ``config["strategy"]`` (see :func:`make_client_hooks`). All traffic is named tensors and
JSON-able scalars, so the same objects run in the in-process simulation and behind gRPC.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from trillium.federated.core.aggregation import weighted_average
from trillium.federated.core.config import LocalTrainConfig
from trillium.federated.core.types import (
    ClientInstruction,
    ClientResult,
    ModelState,
    Scalar,
    StrategyState,
    TensorMap,
    clone_state,
)

EvaluateFn = Callable[[int, ModelState], dict[str, float]]
"""Server-side evaluation: ``(server_round, global_weights) -> metrics``."""


def client_seed(seed: int, server_round: int, client_id: str) -> int:
    """A per-client, per-round seed that does not depend on sampling order."""
    return (seed * 1_000_003 + server_round * 10_007 + zlib.crc32(client_id.encode())) % (2**31 - 1)


@dataclass(kw_only=True)
class Strategy(ABC):
    """Server side of a federated algorithm.

    Subclasses set ``name`` (the key of their client hooks) and implement :meth:`aggregate`; they
    override :meth:`client_config` / :meth:`client_payload` to ship hyperparameters and tensors, and
    :meth:`state_dict` / :meth:`load_state_dict` when they keep state across rounds.
    """

    name: ClassVar[str] = ""
    local: LocalTrainConfig = field(default_factory=LocalTrainConfig)
    seed: int = 0

    def client_config(self) -> dict[str, Scalar]:
        """Strategy hyperparameters the client needs (JSON-able)."""
        return {}

    def client_payload(self, server_round: int, global_weights: ModelState) -> TensorMap:
        """Tensors every selected client receives this round besides the weights."""
        return {}

    def configure_round(
        self, server_round: int, global_weights: ModelState, client_ids: Sequence[str]
    ) -> dict[str, ClientInstruction]:
        """One instruction per selected client: weights, config (with a per-client seed), payload."""
        if server_round < 0:
            raise ValueError(f"server_round must be >= 0, got {server_round}")
        if len(set(client_ids)) != len(client_ids):
            raise ValueError("client_ids must be unique")
        payload = self.client_payload(server_round, global_weights)
        shared = {
            "strategy": self.name,
            "round": server_round,
            **self.local.to_config(),
            **self.client_config(),
        }
        return {
            cid: ClientInstruction(
                weights=global_weights,
                config={**shared, "local_seed": client_seed(self.seed, server_round, cid)},
                payload=payload,
            )
            for cid in client_ids
        }

    @abstractmethod
    def aggregate(
        self, server_round: int, global_weights: ModelState, results: Mapping[str, ClientResult]
    ) -> ModelState:
        """The next global model from this round's client results (failed clients are simply absent)."""

    def evaluate(
        self, server_round: int, global_weights: ModelState, evaluate_fn: EvaluateFn | None = None
    ) -> dict[str, float]:
        """Server-side evaluation of the global model (empty without an ``evaluate_fn``)."""
        return {} if evaluate_fn is None else evaluate_fn(server_round, global_weights)

    def state_dict(self) -> StrategyState:
        """Checkpointable state (stateless strategies return an empty state)."""
        return StrategyState()

    def load_state_dict(self, state: StrategyState) -> None:
        """Restore what :meth:`state_dict` returned (stateless strategies accept only an empty state)."""
        if state.tensors:
            raise ValueError(f"state holds tensors {sorted(state.tensors)} but {self.name} keeps none")


def fedavg_aggregate(global_weights: ModelState, results: Mapping[str, ClientResult]) -> ModelState:
    """``w ← Σ_k (n_k / Σ_j n_j) w_k`` (McMahan et al. 2017, arXiv 1602.05629); no results → unchanged."""
    if not results:
        return clone_state(global_weights)
    ordered = sorted(results)
    return weighted_average(
        [results[cid].weights for cid in ordered], [results[cid].num_examples for cid in ordered]
    )
