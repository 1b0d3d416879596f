"""The client-side half of a strategy: hooks into the shared local training loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trillium.federated.core.data.datasets import ArrayDataset
from trillium.federated.core.types import TensorMap


class ClientHooks:
    """Plain local SGD on cross-entropy (FedAvg's client). Strategies override what they change.

    The loop in :func:`trillium.federated.core.client.train_local` calls, in order:
    ``on_train_start`` once, then per batch ``loss`` → backward → ``before_step`` → optimiser step,
    then ``on_train_end`` once, whose tensors travel to the server as ``ClientResult.extras``.
    """

    def on_train_start(self, model: nn.Module, data: ArrayDataset) -> None:
        """Called once before the first batch, with the global weights loaded into ``model``."""

    def loss(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss of one batch (``x: [B, ...]``, ``y: [B]``) and scalar metrics to log."""
        ce = F.cross_entropy(model(x), y)
        return ce, {"ce": float(ce.detach())}

    def before_step(self, model: nn.Module) -> None:
        """Called after ``backward`` and before the optimiser step (gradient corrections)."""

    def on_train_end(self, model: nn.Module, data: ArrayDataset, num_steps: int, lr: float) -> TensorMap:
        """Called once after the last step; returns tensors to upload."""
        return {}
