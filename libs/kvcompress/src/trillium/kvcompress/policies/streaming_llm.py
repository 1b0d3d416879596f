"""StreamingLLM (Xiao et al., arXiv 2309.17453): keep the first ``n_sinks`` tokens (attention sinks)
and the most recent ones, evict the middle.

Confirmed (paper): sinks + recent window. Our choice: ``n_sinks = 4`` (the paper's default) and the
recent window fills the rest of the budget; every head keeps the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from trillium.kvcompress.layout import TokenLayout
from trillium.kvcompress.policies.base import LayerInputs, LayerResult, Policy, param

__all__ = ["StreamingLLM"]


@dataclass
class StreamingLLM(Policy):
    n_sinks: int = param(4, "attention-sink tokens kept at the start of the prompt", minimum=0)

    name: ClassVar[str] = "streaming_llm"
    summary: ClassVar[str] = "attention sinks + recent window (arXiv 2309.17453)"

    def scored_rows(self, layout: TokenLayout) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.long)  # scores without queries

    def compress_layer(self, inputs: LayerInputs) -> LayerResult:
        length = inputs.length
        n_keep = self.tokens_to_keep(length)
        sinks = min(self.n_sinks, n_keep)
        kept = torch.cat([torch.arange(sinks), torch.arange(length - (n_keep - sinks), length)]).unique()
        return LayerResult.select(inputs.keys, inputs.values, kept.expand(inputs.num_kv_heads, -1))
