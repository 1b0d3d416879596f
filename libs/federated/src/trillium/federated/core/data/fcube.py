"""FCUBE feature-skew data (NIID-Bench, arXiv 2102.02079): label ``1[x1 < 0]`` on the cube [−1, 1]³.

Each of 4 clients holds two opposite octants, so ``x2`` and ``x3`` correlate with the label at
±0.87 locally (sign depending on the client) while the pooled correlation is ≈ 0.
"""

from __future__ import annotations

import numpy as np
import torch

from trillium.federated.core.data.datasets import ArrayDataset
from trillium.federated.core.data.simpson import GroupedDataset


def make_fcube(num_samples: int = 4000, seed: int = 0) -> GroupedDataset:
    """FCUBE points ``x: [N, 3]`` uniform in [−1, 1]³; ``groups`` ∈ {0..3} pairs opposite octants.

    Opposite octants share the signs of ``x1·x2`` and ``x1·x3``; the client id encodes those two.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(num_samples, 3))
    y = (x[:, 0] < 0).astype(np.int64)
    same_sign_12 = (x[:, 0] * x[:, 1] > 0).astype(np.int64)
    same_sign_13 = (x[:, 0] * x[:, 2] > 0).astype(np.int64)
    groups = 2 * same_sign_12 + same_sign_13
    data = ArrayDataset(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y), 2)
    return GroupedDataset(data, groups)
