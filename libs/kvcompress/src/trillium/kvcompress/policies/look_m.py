"""LOOK-M (Wan et al., arXiv 2406.18139): text-prior eviction, then merging of the evicted KV into
the kept KV.

Confirmed (paper/code): text tokens are kept first ("text-prior"), visual KV is evicted first; each
evicted token is merged into its cosine-nearest kept key as ``(k_p + k*) / 2`` (values likewise),
several contributions to one pivot averaged (pivot merge, SUSTechBruce/LOOK-M). Our choices: tokens
are ranked by recomputed observation-window attention (FlashAttention-compatible), the window is
always kept, and if text alone exceeds the budget the top text tokens by score are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from trillium.kvcompress.layout import Modality, TokenLayout
from trillium.kvcompress.merging.pivot import merge_into_pivots, nearest_pivots
from trillium.kvcompress.policies.base import (
    LayerInputs,
    LayerResult,
    Policy,
    param,
    topk_with_forced,
    window_rows,
)
from trillium.kvcompress.policies.snapkv import snapkv_scores

__all__ = ["LookM", "merge_evicted"]


def merge_evicted(
    inputs: LayerInputs,
    kept: torch.Tensor,
    eligible_fn: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    record: list[torch.Tensor] | None = None,
) -> LayerResult:
    """Pivot-merge every evicted token of each head into its kept tokens ``kept`` ``[H, n]``.

    ``eligible_fn(head, evicted_idx, kept_idx) -> [m, n] bool`` restricts the pivots (None = all).
    If ``record`` is given, one ``[m, 2]`` tensor per head is appended: (evicted prompt index, pivot
    prompt index or -1).
    """
    length = inputs.length
    out = LayerResult(keys=[], values=[], sources=[], merged=[])
    for h in range(inputs.num_kv_heads):
        keep_idx = kept[h]
        evicted = torch.ones(length, dtype=torch.bool)
        evicted[keep_idx] = False
        evict_idx = torch.nonzero(evicted).flatten()
        keys, values = inputs.keys[h], inputs.values[h]
        eligible = None if eligible_fn is None else eligible_fn(h, evict_idx, keep_idx)
        assignment = nearest_pivots(keys[evict_idx], keys[keep_idx], eligible)
        if record is not None:
            pivot = torch.where(
                assignment >= 0, keep_idx[assignment.clamp_min(0)], torch.full_like(assignment, -1)
            )
            record.append(torch.stack([evict_idx, pivot], dim=1))
        k, v, counts = merge_into_pivots(
            keys[keep_idx], values[keep_idx], keys[evict_idx], values[evict_idx], assignment
        )
        out.keys.append(k)
        out.values.append(v)
        out.sources.append(keep_idx.clone())
        out.merged.append(counts)
    return out


@dataclass
class LookM(Policy):
    window: int = param(32, "observation window: trailing prompt queries that score tokens", minimum=1)
    text_prior: bool = param(True, "keep text tokens before any visual token")
    merge: bool = param(True, "merge evicted tokens into their nearest kept key")

    name: ClassVar[str] = "look_m"
    summary: ClassVar[str] = "text-prior eviction + pivot merge of evicted KV (arXiv 2406.18139)"

    def scored_rows(self, layout: TokenLayout) -> torch.Tensor:
        return window_rows(layout, self.window)

    def compress_layer(self, inputs: LayerInputs) -> LayerResult:
        scores, forced = snapkv_scores(inputs, self.window, kernel=1)
        if self.text_prior:
            text = inputs.layout.mask(Modality.TEXT)
            scores = scores + text.float() * (scores.max() + 1.0)
        kept = topk_with_forced(scores, self.tokens_to_keep(inputs.length), forced)
        if not self.merge:
            return LayerResult.select(inputs.keys, inputs.values, kept)
        return merge_evicted(inputs, kept)
