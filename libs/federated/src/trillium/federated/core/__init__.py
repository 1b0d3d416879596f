"""trillium.federated.core — federated-learning strategies (FedCFA, FedAvg, FedProx, SCAFFOLD, FedDyn),
models, offline datasets and partitioners, the client training loop and an in-process simulation.

No transport: everything exchanged is named tensors and JSON-able scalars.
"""

from importlib.metadata import version

from trillium.federated.core.aggregation import weighted_average, weighted_average_reference
from trillium.federated.core.client import evaluate_model, run_client, train_local
from trillium.federated.core.config import LocalTrainConfig
from trillium.federated.core.hooks import ClientHooks
from trillium.federated.core.models import ModelSpec, SplitModel, build_model
from trillium.federated.core.simulation import (
    History,
    RoundRecord,
    SimulationConfig,
    sample_clients,
    simulate,
    train_centralised,
)
from trillium.federated.core.strategies import (
    FedAvg,
    FedCFA,
    FedDyn,
    FedProx,
    Scaffold,
    Strategy,
    make_client_hooks,
)
from trillium.federated.core.types import (
    ClientInstruction,
    ClientResult,
    ModelState,
    StrategyState,
    state_from_numpy,
    state_to_numpy,
)

__version__ = version("trillium-federated")  # the installed package's version (pyproject.toml)

__all__ = [
    "ClientHooks",
    "ClientInstruction",
    "ClientResult",
    "FedAvg",
    "FedCFA",
    "FedDyn",
    "FedProx",
    "History",
    "LocalTrainConfig",
    "ModelSpec",
    "ModelState",
    "RoundRecord",
    "Scaffold",
    "SimulationConfig",
    "SplitModel",
    "Strategy",
    "StrategyState",
    "build_model",
    "evaluate_model",
    "make_client_hooks",
    "run_client",
    "sample_clients",
    "simulate",
    "state_from_numpy",
    "state_to_numpy",
    "train_centralised",
    "train_local",
    "weighted_average",
    "weighted_average_reference",
]
