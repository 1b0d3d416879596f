"""In-process, sequential federated simulation (no Ray, no threads) and the centralised ceiling."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from trillium.federated.core.client import evaluate_model, run_client, train_local
from trillium.federated.core.config import LocalTrainConfig
from trillium.federated.core.data.datasets import ArrayDataset
from trillium.federated.core.strategies.base import Strategy
from trillium.federated.core.types import ClientResult, ModelState, TensorMap, clone_state

ModelFn = Callable[[], nn.Module]


@dataclass(frozen=True)
class SimulationConfig:
    """Rounds, client sampling (Flower's ``max(int(N·fraction), min_clients)``), failures, seed."""

    rounds: int
    fraction: float = 1.0
    min_clients: int = 1
    dropout_prob: float = 0.0
    straggler_prob: float = 0.0
    straggler_work: float = 0.5
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")
        if self.min_clients < 1:
            raise ValueError(f"min_clients must be >= 1, got {self.min_clients}")
        for name in ("dropout_prob", "straggler_prob"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 < self.straggler_work <= 1:
            raise ValueError(f"straggler_work must be in (0, 1], got {self.straggler_work}")


@dataclass
class RoundRecord:
    """Metrics after ``round`` completed rounds (round 0 = the initial model)."""

    round: int
    accuracy: float
    loss: float
    num_sampled: int = 0
    num_results: int = 0
    num_dropped: int = 0
    num_stragglers: int = 0
    train_loss: float = float("nan")
    seconds: float = 0.0


@dataclass
class History:
    """Per-round records of one run, plus the final global weights."""

    records: list[RoundRecord] = field(default_factory=list)
    final_weights: ModelState | None = None

    @property
    def accuracies(self) -> list[float]:
        """Test accuracy after 0, 1, …, R rounds."""
        return [r.accuracy for r in self.records]

    @property
    def final_accuracy(self) -> float:
        """Test accuracy after the last round."""
        return self.records[-1].accuracy

    def rounds_to(self, target: float) -> int | None:
        """First round whose accuracy reaches ``target``, or ``None``."""
        return next((r.round for r in self.records if r.accuracy >= target), None)

    def as_dicts(self) -> list[dict[str, float]]:
        """Records as plain dicts (JSON-able)."""
        return [dataclasses.asdict(r) for r in self.records]


def sample_clients(
    client_ids: Sequence[str], fraction: float, min_clients: int, rng: np.random.Generator
) -> list[str]:
    """``max(int(N·fraction), min_clients)`` distinct clients (capped at N), in a seeded order."""
    if not client_ids:
        raise ValueError("client_ids must not be empty")
    size = min(len(client_ids), max(int(len(client_ids) * fraction), min_clients))
    return sorted(rng.choice(list(client_ids), size=size, replace=False).tolist())


def _initial_model(model_fn: ModelFn, seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return model_fn()


def _client_map(client_data: Mapping[str, ArrayDataset] | Sequence[ArrayDataset]) -> dict[str, ArrayDataset]:
    if isinstance(client_data, Mapping):
        mapping = dict(client_data)
    else:
        mapping = {f"client-{i:04d}": data for i, data in enumerate(client_data)}
    if not mapping:
        raise ValueError("client_data must not be empty")
    return mapping


def simulate(
    strategy: Strategy,
    model_fn: ModelFn,
    client_data: Mapping[str, ArrayDataset] | Sequence[ArrayDataset],
    test_data: ArrayDataset,
    config: SimulationConfig,
) -> History:
    """Run ``config.rounds`` rounds of ``strategy`` with every client in this process.

    Each round: sample clients, ``configure_round``, drop each with ``dropout_prob`` (it never
    reports), mark stragglers with ``straggler_prob`` (they do ``straggler_work`` of their steps),
    train the rest with :func:`run_client` (their persisted state kept here), ``aggregate`` and
    evaluate the global model on ``test_data``.
    """
    clients = _client_map(client_data)
    model = _initial_model(model_fn, config.seed)
    weights = clone_state(model.state_dict())
    client_states: dict[str, TensorMap] = {cid: {} for cid in clients}
    rng = np.random.default_rng(config.seed)
    initial = evaluate_model(model, test_data)
    history = History([RoundRecord(0, initial["accuracy"], initial["loss"])])
    bar = tqdm(range(config.rounds), desc=f"{strategy.name}", disable=not config.progress, leave=False)
    for server_round in bar:
        started = time.perf_counter()
        sampled = sample_clients(list(clients), config.fraction, config.min_clients, rng)
        instructions = strategy.configure_round(server_round, weights, sampled)
        results: dict[str, ClientResult] = {}
        dropped = stragglers = 0
        for cid, instruction in instructions.items():
            if rng.random() < config.dropout_prob:
                dropped += 1
                continue
            if rng.random() < config.straggler_prob:
                stragglers += 1
                instruction.config = {**instruction.config, "local_work_fraction": config.straggler_work}
            results[cid] = run_client(model, clients[cid], instruction, client_states[cid])
        weights = strategy.aggregate(server_round, weights, results)
        model.load_state_dict(weights)
        metrics = strategy.evaluate(server_round, weights, lambda _r, _w: evaluate_model(model, test_data))
        train_losses = [r.metrics["loss"] for r in results.values()]
        history.records.append(
            RoundRecord(
                round=server_round + 1,
                accuracy=metrics["accuracy"],
                loss=metrics["loss"],
                num_sampled=len(sampled),
                num_results=len(results),
                num_dropped=dropped,
                num_stragglers=stragglers,
                train_loss=float(np.mean(train_losses)) if train_losses else float("nan"),
                seconds=time.perf_counter() - started,
            )
        )
        bar.set_postfix(acc=f"{metrics['accuracy']:.3f}")
    history.final_weights = weights
    return history


def train_centralised(
    model_fn: ModelFn,
    train_data: ArrayDataset,
    test_data: ArrayDataset,
    epochs: int,
    *,
    local: LocalTrainConfig | None = None,
    seed: int = 0,
    progress: bool = True,
) -> History:
    """The ceiling: the same model and SGD settings on the pooled data, one record per epoch."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    local = local or LocalTrainConfig()
    model = _initial_model(model_fn, seed)
    initial = evaluate_model(model, test_data)
    history = History([RoundRecord(0, initial["accuracy"], initial["loss"])])
    for epoch in tqdm(range(epochs), desc="centralised", disable=not progress, leave=False):
        started = time.perf_counter()
        epoch_config = dataclasses.replace(local, epochs=1, seed=seed * 7919 + epoch)
        result = train_local(model, train_data, epoch_config)
        metrics = evaluate_model(model, test_data)
        history.records.append(
            RoundRecord(
                round=epoch + 1,
                accuracy=metrics["accuracy"],
                loss=metrics["loss"],
                train_loss=result.metrics["loss"],
                seconds=time.perf_counter() - started,
            )
        )
    history.final_weights = clone_state(model.state_dict())
    return history
