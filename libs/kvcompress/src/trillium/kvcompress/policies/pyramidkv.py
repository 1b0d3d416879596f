"""PyramidKV (Cai et al., arXiv 2406.02069): SnapKV scoring with per-layer budgets that decrease
linearly with depth (lower layers attend broadly and get more cache).

Confirmed (paper/code): layer 0 keeps ``2b - b/beta`` prefix tokens, the last layer ``b/beta``
(``beta = 20``), ``b`` the mean prefix budget, plus the window in every layer (KVCache-Factory).
Our choices: the sum over layers equals the uniform budget exactly (largest remainders), and what
a layer cannot use beyond the prompt length goes to the other layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from trillium.kvcompress.budgets.layer import pyramid_layer_budgets
from trillium.kvcompress.layout import TokenLayout
from trillium.kvcompress.policies.base import (
    LayerInputs,
    LayerResult,
    Policy,
    param,
    topk_with_forced,
    window_rows,
)
from trillium.kvcompress.policies.snapkv import snapkv_scores

__all__ = ["PyramidKV"]


@dataclass
class PyramidKV(Policy):
    window: int = param(32, "observation window: trailing prompt queries that vote", minimum=1)
    kernel: int = param(5, "average-pooling kernel over the votes (odd)", minimum=1)
    beta: float = param(20.0, "ratio between the mean and the top layer's prefix budget", minimum=1.0)

    name: ClassVar[str] = "pyramidkv"
    summary: ClassVar[str] = "SnapKV scores with linearly decreasing layer budgets (arXiv 2406.02069)"

    def scored_rows(self, layout: TokenLayout) -> torch.Tensor:
        return window_rows(layout, self.window)

    def compress_layer(self, inputs: LayerInputs) -> LayerResult:
        n_keep = self.tokens_to_keep(inputs.length)
        scores, forced = snapkv_scores(inputs, self.window, self.kernel)
        w = min(int(forced.sum()), n_keep)
        budgets = pyramid_layer_budgets(n_keep, inputs.num_layers, w, self.beta, capacity=inputs.length)
        kept = topk_with_forced(scores, min(budgets[inputs.layer_idx], inputs.length), forced)
        return LayerResult.select(inputs.keys, inputs.values, kept)
