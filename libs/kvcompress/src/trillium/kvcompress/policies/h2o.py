"""H2O heavy-hitter oracle (Zhang et al., arXiv 2306.14048): keep the tokens with the largest
accumulated attention (column sums of the full prefill attention) plus the most recent tokens.

Confirmed (paper): heavy hitters + recent tokens, equal split in the paper's main setting. Our
choices: the prefill runs with eager attention to get the matrix (as kvpress'
``ObservedAttentionPress``), or the serving engine sums its columns chunk by chunk (the same score,
by linearity), GQA scores averaged per KV group, ``recent_fraction = 0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from trillium.kvcompress.layout import TokenLayout
from trillium.kvcompress.policies.base import LayerInputs, LayerResult, Policy, param, topk_with_forced
from trillium.kvcompress.scoring.accumulated import accumulated_attention
from trillium.kvcompress.scoring.window import gqa_mean

__all__ = ["H2O"]


@dataclass
class H2O(Policy):
    recent_fraction: float = param(
        0.5, "share of the budget given to the most recent tokens", minimum=0.0, maximum=1.0
    )

    name: ClassVar[str] = "h2o"
    summary: ClassVar[str] = "heavy hitters by accumulated attention + recent tokens (arXiv 2306.14048)"
    needs_attention_weights: ClassVar[bool] = True

    def scored_rows(self, layout: TokenLayout) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.long)  # scores without queries

    def compress_layer(self, inputs: LayerInputs) -> LayerResult:
        if inputs.accumulated_attention is not None:  # summed chunk by chunk (serving engine)
            scores = gqa_mean(inputs.accumulated_attention.float().unsqueeze(0), inputs.num_kv_heads)[0]
        elif inputs.attention_weights is not None:
            scores = accumulated_attention(inputs.attention_weights.unsqueeze(0), inputs.num_kv_heads)[0]
        else:
            raise ValueError("attention_weights are required by h2o (eager prefill attention)")
        n_keep = self.tokens_to_keep(inputs.length)
        forced = torch.zeros(inputs.length, dtype=torch.bool)
        n_recent = round(n_keep * self.recent_fraction)
        if n_recent:
            forced[inputs.length - n_recent :] = True
        kept = topk_with_forced(scores, n_keep, forced)
        return LayerResult.select(inputs.keys, inputs.values, kept)
