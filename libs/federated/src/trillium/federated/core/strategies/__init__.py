"""Strategies (server halves) and the registry of their client halves, keyed by ``config["strategy"]``."""

from __future__ import annotations

from collections.abc import Callable

from trillium.federated.core.hooks import ClientHooks
from trillium.federated.core.strategies.base import EvaluateFn, Strategy, client_seed, fedavg_aggregate
from trillium.federated.core.strategies.fedavg import FedAvg, FedAvgClient
from trillium.federated.core.strategies.fedcfa import FedCFA, FedCFAClient
from trillium.federated.core.strategies.feddyn import FedDyn, FedDynClient
from trillium.federated.core.strategies.fedprox import FedProx, FedProxClient
from trillium.federated.core.strategies.scaffold import Scaffold, ScaffoldClient
from trillium.federated.core.types import ClientInstruction, TensorMap

CLIENT_HOOKS: dict[str, Callable[[ClientInstruction, TensorMap], ClientHooks]] = {
    FedAvg.name: FedAvgClient.from_instruction,
    FedProx.name: FedProxClient.from_instruction,
    Scaffold.name: ScaffoldClient.from_instruction,
    FedDyn.name: FedDynClient.from_instruction,
    FedCFA.name: FedCFAClient.from_instruction,
}


def make_client_hooks(instruction: ClientInstruction, client_state: TensorMap | None = None) -> ClientHooks:
    """The client half named by ``instruction.config["strategy"]``.

    ``client_state`` is the client's persisted tensors (SCAFFOLD's ``c_i``, FedDyn's gradient); the
    hooks update it in place, and the caller persists it between rounds.
    """
    name = str(instruction.config.get("strategy", ""))
    if name not in CLIENT_HOOKS:
        raise ValueError(f"config['strategy'] must be one of {sorted(CLIENT_HOOKS)}, got {name!r}")
    return CLIENT_HOOKS[name](instruction, {} if client_state is None else client_state)


__all__ = [
    "CLIENT_HOOKS",
    "EvaluateFn",
    "FedAvg",
    "FedCFA",
    "FedDyn",
    "FedProx",
    "Scaffold",
    "Strategy",
    "client_seed",
    "fedavg_aggregate",
    "make_client_hooks",
]
