"""FlowMM (arXiv 2511.05534): information-flow-guided KV merging for multimodal LLMs.

Per layer, the cross-modal interaction ratio ``rho^l = (1/H) sum_h (A_{v->t} + A_{t->v}) / A`` gates
the merge: cross-modal (any pivot) when ``rho^l > theta``, intra-modal (same-modality pivot)
otherwise. Importance ``I(i)`` = attention from proxy tokens P (the trailing window); the top-B
tokens are pivots, the others merge into their most key-similar eligible pivot; pivots with
``I > tau`` are protected (never merge targets) — sensitivity-adaptive matching.

Confirmed (paper, eqs. 6-10): rho gate, proxy-token importance, top-B pivots, cosine matching with
protected pivots. Our choices (the paper does not specify): ``theta = 0.25`` (best range 0.2-0.3 in
its Table 3); ``tau`` = the 90th percentile of the pivots' ``I`` per (layer, head); ``rho`` from the
text window plus ``s = 4`` query rows sampled per image/frame (recomputed, FlashAttention-compatible);
the LOOK-M pivot merge as ``f_merge``; no eligible pivot -> evict; uniform budget per layer and head;
the window is always a pivot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from trillium.kvcompress.layout import Modality, TokenLayout
from trillium.kvcompress.merging.flow import flow_eligibility, protection_threshold
from trillium.kvcompress.policies.base import (
    LayerInputs,
    LayerResult,
    Policy,
    observation_window,
    param,
    topk_with_forced,
    window_rows,
)
from trillium.kvcompress.policies.look_m import merge_evicted
from trillium.kvcompress.scoring.visual_queries import interaction_ratio, sample_visual_rows
from trillium.kvcompress.scoring.window import window_indices

__all__ = ["FlowMM"]


@dataclass
class FlowMM(Policy):
    window: int = param(32, "proxy tokens P: trailing prompt queries giving importance I", minimum=1)
    theta: float = param(0.25, "merge cross-modally in layers with rho > theta", minimum=0.0, maximum=1.0)
    protect_quantile: float = param(
        0.9, "tau = this quantile of the pivots' importance", minimum=0.0, maximum=1.0
    )
    visual_queries: int = param(4, "query rows sampled per image/frame to estimate rho", minimum=1)

    name: ClassVar[str] = "flowmm"
    required_modalities: ClassVar[tuple[Modality, ...]] = (Modality.TEXT,)
    needs_non_text: ClassVar[bool] = True
    summary: ClassVar[str] = "flow-gated cross/intra-modal merging with protected pivots (arXiv 2511.05534)"

    def scored_rows(self, layout: TokenLayout) -> torch.Tensor:
        return torch.cat(
            [window_rows(layout, self.window), sample_visual_rows(layout, self.visual_queries)]
        ).unique()

    def compress_layer(self, inputs: LayerInputs) -> LayerResult:
        length, layout = inputs.length, inputs.layout
        n_keep = self.tokens_to_keep(length)
        window_rows = window_indices(length, max(observation_window(layout, self.window), 1))
        rows = torch.cat([window_rows, sample_visual_rows(layout, self.visual_queries)]).unique()
        rho = float(interaction_ratio(inputs.attention_rows(rows).unsqueeze(0), rows, layout)[0])
        cross_modal = rho > self.theta
        importance = inputs.window_scores(window_rows)
        forced = torch.zeros(length, dtype=torch.bool)
        forced[window_rows[-min(n_keep, window_rows.numel()) :]] = True
        kept = topk_with_forced(importance, n_keep, forced)
        modality = layout.modality
        taus = [protection_threshold(importance[h, kept[h]], self.protect_quantile) for h in range(len(kept))]

        def eligible(head: int, evicted: torch.Tensor, pivots: torch.Tensor) -> torch.Tensor:
            return flow_eligibility(
                modality[evicted],
                modality[pivots],
                importance[head, pivots],
                cross_modal=cross_modal,
                tau=taus[head],
            )

        inputs.state.setdefault("rho", {})[inputs.layer_idx] = rho
        inputs.state.setdefault("cross_modal", {})[inputs.layer_idx] = cross_modal
        inputs.state.setdefault("tau", {})[inputs.layer_idx] = taus
        pairs: list[torch.Tensor] = []
        inputs.state.setdefault("merge_pairs", {})[inputs.layer_idx] = pairs
        return merge_evicted(inputs, kept, eligible, record=pairs)
