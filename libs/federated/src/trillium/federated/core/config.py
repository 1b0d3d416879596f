"""Local training hyperparameters, shipped to clients as JSON-able scalars."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from trillium.federated.core.types import Scalar


@dataclass(frozen=True)
class LocalTrainConfig:
    """Plain SGD settings every strategy's client uses (FedCFA's code defaults, arXiv 2412.18904).

    ``work_fraction`` < 1 makes a client stop after that share of its local steps (a straggler doing
    partial work, as simulated in FedProx, arXiv 1812.06127).
    """

    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 1
    batch_size: int = 128
    work_fraction: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 < self.work_fraction <= 1:
            raise ValueError(f"work_fraction must be in (0, 1], got {self.work_fraction}")

    def to_config(self) -> dict[str, Scalar]:
        """As JSON-able scalars with a ``local_`` prefix (merged into a round's config)."""
        return {f"local_{name}": value for name, value in asdict(self).items()}

    @classmethod
    def from_config(cls, config: dict[str, Scalar]) -> LocalTrainConfig:
        """Inverse of :meth:`to_config`; missing keys keep their defaults, unknown keys are ignored."""
        values = {}
        for f in fields(cls):
            key = f"local_{f.name}"
            if key in config:
                values[f.name] = type(getattr(cls(), f.name))(config[key])
        return cls(**values)
