"""A run's configuration: validation of ``RunConfig`` and construction of its strategy, model and data.

Every field is checked up front so a bad run never starts; errors are ``ValidationError`` naming
``config.<field>`` (INVALID_ARGUMENT on the wire).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from trillium.federated.core.config import LocalTrainConfig
from trillium.federated.core.data.datasets import ArrayDataset, load_digits
from trillium.federated.core.models import ModelSpec, SplitModel, build_model
from trillium.federated.core.strategies import FedAvg, FedCFA, FedDyn, FedProx, Scaffold, Strategy
from trillium.federated.core.types import Scalar
from trillium.federated.v1 import coordinator_pb2
from trillium.servicekit.errors import ValidationError
from trillium.servicekit.parameters import from_parameter_map, to_parameter_map

DATA_SPLIT_SEED = 0
"""Seed of the train/test split, shared by coordinator (test split) and clients (train split)."""
MODELS = ("mlp", "cnn")
MAX_ROUNDS = 100_000
MAX_ROUND_TIMEOUT_SECONDS = 7 * 24 * 3600.0

# Strategy parameters accepted by every strategy (local SGD settings beyond RunConfig's fields).
_LOCAL_PARAMETERS: dict[str, type] = {"momentum": float, "weight_decay": float}
# name -> (parameter name -> type); the strategy's own __post_init__ checks the values.
STRATEGY_PARAMETERS: dict[str, dict[str, type]] = {
    FedAvg.name: {},
    FedProx.name: {"mu": float},
    Scaffold.name: {"num_clients": int, "server_lr": float},
    FedDyn.name: {"num_clients": int, "alpha": float},
    FedCFA.name: {
        "top_k_fraction": float,
        "fdc": bool,
        "fdc_weight": float,
        "mean_batch": int,
        "noise_std": float,
        "r0": float,
        "r1": float,
        "r2": float,
    },
}
REQUIRED_PARAMETERS: dict[str, tuple[str, ...]] = {
    Scaffold.name: ("num_clients",),
    FedDyn.name: ("num_clients",),
}


@dataclass(frozen=True)
class RunSpec:
    """A validated run configuration (the ``RunConfig`` message as plain Python)."""

    strategy: str
    num_rounds: int
    fraction_fit: float
    min_clients: int
    round_timeout_seconds: float
    model: str
    dataset: str
    seed: int
    local_epochs: int
    batch_size: int
    learning_rate: float
    strategy_parameters: dict[str, Scalar] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, config: coordinator_pb2.RunConfig) -> RunSpec:
        """Validate every field of ``config``; raises ``ValidationError`` naming the first bad one."""
        strategy = config.strategy.strip().lower()
        if strategy not in STRATEGY_PARAMETERS:
            raise ValidationError(
                "config.strategy",
                f"unknown strategy {config.strategy!r}; one of {sorted(STRATEGY_PARAMETERS)}",
            )
        if not 1 <= config.num_rounds <= MAX_ROUNDS:
            raise ValidationError(
                "config.num_rounds", f"must be in [1, {MAX_ROUNDS}], got {config.num_rounds}"
            )
        if not (math.isfinite(config.fraction_fit) and 0 < config.fraction_fit <= 1):
            raise ValidationError("config.fraction_fit", f"must be in (0, 1], got {config.fraction_fit}")
        if config.min_clients < 1:
            raise ValidationError("config.min_clients", f"must be >= 1, got {config.min_clients}")
        timeout = config.round_timeout_seconds
        if not (math.isfinite(timeout) and 0 < timeout <= MAX_ROUND_TIMEOUT_SECONDS):
            raise ValidationError(
                "config.round_timeout_seconds",
                f"must be in (0, {MAX_ROUND_TIMEOUT_SECONDS:.0f}], got {timeout}",
            )
        if config.model not in MODELS:
            raise ValidationError("config.model", f"unknown model {config.model!r}; one of {list(MODELS)}")
        if config.dataset not in DATASETS:
            raise ValidationError(
                "config.dataset", f"unknown dataset {config.dataset!r}; one of {sorted(DATASETS)}"
            )
        if config.seed >= 2**31:
            raise ValidationError("config.seed", f"must be < 2**31, got {config.seed}")
        for name in ("local_epochs", "batch_size"):
            if getattr(config, name) < 1:
                raise ValidationError(f"config.{name}", f"must be >= 1, got {getattr(config, name)}")
        if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
            raise ValidationError("config.learning_rate", f"must be positive, got {config.learning_rate}")
        parameters = _check_parameters(
            strategy, from_parameter_map(config.strategy_parameters, "config.strategy_parameters")
        )
        spec = cls(
            strategy=strategy,
            num_rounds=config.num_rounds,
            fraction_fit=config.fraction_fit,
            min_clients=config.min_clients,
            round_timeout_seconds=timeout,
            model=config.model,
            dataset=config.dataset,
            seed=config.seed,
            local_epochs=config.local_epochs,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            strategy_parameters=parameters,
        )
        spec.build_strategy()  # the strategy's own range checks, reported as INVALID_ARGUMENT
        return spec

    def to_proto(self) -> coordinator_pb2.RunConfig:
        fields = asdict(self)
        parameters = fields.pop("strategy_parameters")
        return coordinator_pb2.RunConfig(**fields, strategy_parameters=to_parameter_map(parameters))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSpec:
        return cls(**dict(data))

    def local_config(self) -> LocalTrainConfig:
        extra = {k: float(v) for k, v in self.strategy_parameters.items() if k in _LOCAL_PARAMETERS}
        return LocalTrainConfig(
            lr=self.learning_rate,
            epochs=self.local_epochs,
            batch_size=self.batch_size,
            seed=self.seed,
            **extra,
        )

    def build_strategy(self) -> Strategy:
        """A fresh strategy; a value it rejects is an error naming ``config.strategy_parameters``."""
        params = {k: v for k, v in self.strategy_parameters.items() if k not in _LOCAL_PARAMETERS}
        if self.strategy == FedCFA.name:
            weights = tuple(
                float(params.pop(key, default)) for key, default in (("r0", 1.0), ("r1", 5.0), ("r2", 5.0))
            )
            params["loss_weights"] = weights
        try:
            return STRATEGIES[self.strategy](local=self.local_config(), seed=self.seed, **params)
        except ValueError as error:
            raise ValidationError("config.strategy_parameters", str(error)) from error

    def model_config(self) -> dict[str, Scalar]:
        """What a client needs besides the strategy config to rebuild the model and load its data."""
        return {"model": self.model, "dataset": self.dataset, "run_seed": self.seed}


def _check_parameters(strategy: str, parameters: dict[str, Scalar]) -> dict[str, Scalar]:
    allowed = STRATEGY_PARAMETERS[strategy] | _LOCAL_PARAMETERS
    checked: dict[str, Scalar] = {}
    for name, value in parameters.items():
        field_name = f"config.strategy_parameters.{name}"
        if name not in allowed:
            raise ValidationError(field_name, f"unknown parameter for {strategy}; allowed: {sorted(allowed)}")
        kind = allowed[name]
        if kind is bool:
            if not isinstance(value, bool):
                raise ValidationError(field_name, "must be a flag")
        elif kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValidationError(field_name, "must be an integer")
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValidationError(field_name, "must be a finite number")
        checked[name] = kind(value)
    for name in REQUIRED_PARAMETERS.get(strategy, ()):
        if name not in checked:
            raise ValidationError(f"config.strategy_parameters.{name}", f"required by {strategy}")
    return checked


STRATEGIES: dict[str, Callable[..., Strategy]] = {
    FedAvg.name: FedAvg,
    FedProx.name: FedProx,
    Scaffold.name: Scaffold,
    FedDyn.name: FedDyn,
    FedCFA.name: FedCFA,
}


def _digits() -> tuple[ArrayDataset, ArrayDataset]:
    return load_digits(seed=DATA_SPLIT_SEED)


DATASETS: dict[str, Callable[[], tuple[ArrayDataset, ArrayDataset]]] = {"digits": _digits}
"""Offline datasets by name: ``() -> (train, test)`` with the shared split seed."""


def load_dataset(name: str) -> tuple[ArrayDataset, ArrayDataset]:
    if name not in DATASETS:
        raise ValueError(f"dataset: unknown dataset {name!r}; one of {sorted(DATASETS)}")
    return DATASETS[name]()


def make_model(kind: str, sample: ArrayDataset, seed: int | None) -> SplitModel:
    """The run's model for ``sample``'s input shape and classes (library default widths)."""
    return build_model(ModelSpec(kind, sample.input_shape, sample.num_classes), seed=seed)
