"""The one local training loop, shared by the simulation and the (gRPC) client runtime."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trillium.federated.core.config import LocalTrainConfig
from trillium.federated.core.data.datasets import ArrayDataset
from trillium.federated.core.hooks import ClientHooks
from trillium.federated.core.strategies import make_client_hooks
from trillium.federated.core.types import ClientInstruction, ClientResult, TensorMap, clone_state


def train_local(
    model: nn.Module, data: ArrayDataset, config: LocalTrainConfig, hooks: ClientHooks | None = None
) -> ClientResult:
    """Train ``model`` in place on ``data`` with SGD and the strategy's ``hooks``; return its result.

    A fresh optimiser per call: momentum never leaks between clients or rounds (a pitfall of the
    FedCFA reference code). Batches are drawn from a generator seeded by ``config.seed``. With
    ``config.work_fraction < 1`` training stops after that share of the planned steps (straggler).
    """
    if len(data) == 0:
        raise ValueError("data must not be empty")
    hooks = hooks or ClientHooks()
    optimiser = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    planned = max(1, math.ceil(config.work_fraction * config.epochs * steps_per_epoch))
    model.train()
    hooks.on_train_start(model, data)
    steps, loss_sum, metric_sums = 0, 0.0, {}
    while steps < planned:
        for batch in torch.randperm(len(data), generator=generator).split(config.batch_size):
            optimiser.zero_grad(set_to_none=True)
            loss, metrics = hooks.loss(model, data.x[batch], data.y[batch])
            loss.backward()
            hooks.before_step(model)
            optimiser.step()
            steps += 1
            loss_sum += float(loss.detach())
            for key, value in metrics.items():
                metric_sums[key] = metric_sums.get(key, 0.0) + value
            if steps >= planned:
                break
    extras = hooks.on_train_end(model, data, steps, config.lr)
    metrics = {"loss": loss_sum / steps, "steps": float(steps)}
    metrics |= {key: value / steps for key, value in metric_sums.items()}
    return ClientResult(clone_state(model.state_dict()), len(data), metrics, extras)


def run_client(
    model: nn.Module,
    data: ArrayDataset,
    instruction: ClientInstruction,
    client_state: TensorMap | None = None,
) -> ClientResult:
    """Everything a client does for one round: load the global weights, build the strategy's hooks
    (updating ``client_state`` in place), train with the instruction's local settings."""
    model.load_state_dict(instruction.weights)
    hooks = make_client_hooks(instruction, client_state)
    return train_local(model, data, LocalTrainConfig.from_config(instruction.config), hooks)


@torch.no_grad()
def evaluate_model(model: nn.Module, data: ArrayDataset, batch_size: int = 1024) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``data``."""
    if len(data) == 0:
        raise ValueError("data must not be empty")
    model.eval()
    correct, loss_sum = 0, 0.0
    for start in range(0, len(data), batch_size):
        x, y = data.x[start : start + batch_size], data.y[start : start + batch_size]
        logits = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(dim=1) == y).sum())
    return {"accuracy": correct / len(data), "loss": loss_sum / len(data)}
