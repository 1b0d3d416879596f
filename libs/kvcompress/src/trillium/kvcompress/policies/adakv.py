"""AdaKV (Feng et al., arXiv 2407.11550): head-adaptive budgets. A layer keeps ``H_kv * n`` entries
chosen by a global top-k over all heads' SnapKV scores, each head first keeping its own top
``ceil(alpha * n)`` (safeguard ``alpha = 0.2``, as kvpress). The cache is ragged per head and stored
packed (flattened varlen layout), so the memory saving is real.

Confirmed (paper/code): global top-k across heads with a floor; SnapKV scores. Our choice: the
observation window is kept in every head and counts against its budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from trillium.kvcompress.budgets.head import adaptive_head_selection
from trillium.kvcompress.layout import TokenLayout
from trillium.kvcompress.policies.base import LayerInputs, LayerResult, Policy, param, window_rows
from trillium.kvcompress.policies.snapkv import snapkv_scores

__all__ = ["AdaKV"]


@dataclass
class AdaKV(Policy):
    window: int = param(32, "observation window: trailing prompt queries that vote", minimum=1)
    kernel: int = param(5, "average-pooling kernel over the votes (odd)", minimum=1)
    alpha: float = param(
        0.2, "safeguard: share of each head's budget it keeps by its own top-k", minimum=0.0, maximum=1.0
    )

    name: ClassVar[str] = "adakv"
    summary: ClassVar[str] = "head-adaptive budgets by global top-k with a safeguard (arXiv 2407.11550)"

    def scored_rows(self, layout: TokenLayout) -> torch.Tensor:
        return window_rows(layout, self.window)

    def compress_layer(self, inputs: LayerInputs) -> LayerResult:
        n_keep = self.tokens_to_keep(inputs.length)
        scores, forced = snapkv_scores(inputs, self.window, self.kernel)
        if int(forced.sum()) > n_keep:
            forced[: inputs.length - n_keep] = False
        # normalise per head so that scores are comparable across heads (each head's votes sum to 1)
        scores = scores / scores.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        kept = adaptive_head_selection(scores, n_keep, self.alpha, forced)
        return LayerResult.select(inputs.keys, inputs.values, kept)
