"""SnapKV (Li et al., arXiv 2404.14469): the last ``window`` prompt queries vote for the keys they
attend to; votes are smoothed by 1-D average pooling (kernel 5) and each KV head keeps its top
tokens plus the window itself.

Confirmed (paper/code): window votes, pooling, per-head top-k, window kept. Our choices: queries are
recomputed after an SDPA prefill (as kvpress does), GQA votes averaged per KV group, window 32
clipped to the trailing text tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from trillium.kvcompress.layout import TokenLayout
from trillium.kvcompress.policies.base import (
    LayerInputs,
    LayerResult,
    Policy,
    observation_rows,
    param,
    topk_with_forced,
    window_rows,
)
from trillium.kvcompress.scoring.window import pool_scores

__all__ = ["SnapKV", "snapkv_scores"]


def snapkv_scores(inputs: LayerInputs, window: int, kernel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``([H_kv, L] pooled votes, [L] bool kept-anyway mask)`` for one layer, from the rows of
    :func:`~trillium.kvcompress.policies.base.observation_rows`."""
    observed = observation_rows(inputs.layout, window)
    scores = pool_scores(inputs.window_scores(observed.rows), kernel)
    return scores, observed.forced.clone()


@dataclass
class SnapKV(Policy):
    window: int = param(32, "observation window: trailing prompt queries that vote", minimum=1)
    kernel: int = param(5, "average-pooling kernel over the votes (odd)", minimum=1)

    name: ClassVar[str] = "snapkv"
    summary: ClassVar[str] = "observation-window votes, pooled, per-head top-k (arXiv 2404.14469)"

    def scored_rows(self, layout: TokenLayout) -> torch.Tensor:
        return window_rows(layout, self.window)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, got {self.kernel}")

    def compress_layer(self, inputs: LayerInputs) -> LayerResult:
        scores, forced = snapkv_scores(inputs, self.window, self.kernel)
        kept = topk_with_forced(scores, self.tokens_to_keep(inputs.length), forced)
        return LayerResult.select(inputs.keys, inputs.values, kept)
