"""Simpson's-paradox federated data: every client sees a positive trend, the pooled data a negative one.

Generator (our design, following FedCFA's Simpson scenario, arXiv 2412.18904): client ``k`` draws
``x = μ_k + ε``, ``ε ~ N(0, 1)``, ``μ_k = 2k``, and ``P(y = 1 | x) = σ(2(x − μ_k) − 3k + 6)``.
Within each client ``corr(x, y) > 0``; pooled over clients ``corr(x, y) ≈ −0.63``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trillium.federated.core.data.datasets import ArrayDataset


@dataclass
class GroupedDataset:
    """A dataset whose rows carry a natural client id ``groups: [N]`` (see ``group_partition``)."""

    data: ArrayDataset
    groups: np.ndarray


def make_simpson(num_clients: int = 5, samples_per_client: int = 2000, seed: int = 0) -> GroupedDataset:
    """Simpson's-paradox data, ``x: [K·n, 1]`` float32, ``y ∈ {0, 1}``, ``groups`` = client index."""
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if samples_per_client < 1:
        raise ValueError(f"samples_per_client must be >= 1, got {samples_per_client}")
    rng = np.random.default_rng(seed)
    xs, ys, groups = [], [], []
    for k in range(num_clients):
        mu = 2.0 * k
        x = mu + rng.standard_normal(samples_per_client)
        p = 1.0 / (1.0 + np.exp(-(2.0 * (x - mu) - 3.0 * k + 6.0)))
        xs.append(x)
        ys.append((rng.random(samples_per_client) < p).astype(np.int64))
        groups.append(np.full(samples_per_client, k))
    x_all = torch.from_numpy(np.concatenate(xs).astype(np.float32))[:, None]
    data = ArrayDataset(x_all, torch.from_numpy(np.concatenate(ys)), 2)
    return GroupedDataset(data, np.concatenate(groups))
