"""PureKV (arXiv 2510.25600): cross-layer importance estimation (CLIE) for video LLMs.

Layers up to the scoring layer ``l_s`` score themselves with observation-window attention; deeper
layers reuse layer ``l_s``'s scores weighted by their own value norms,
``s_j^{(l)} = A_j^{(l_s)} * ||v_j^{(l)}||_2``, so they need no attention matrix. Kept: ``n_sinks``
sink tokens + the window + top-k by score (StreamingLLM/H2O-compatible).

Confirmed: only the CLIE formula, through secondary summaries (the method body is not public).
Our choices: ``l_s = floor(L / 4)`` unless set (``choose_scoring_layer`` in
:mod:`trillium.kvcompress.scoring.cross_layer` picks it on calibration prompts by Spearman
correlation), 4 sinks, window 32. PureKV's spatial-temporal sparse prefill
(ST-SpAttn) composes with this policy through :class:`ComposedPolicy`.
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
from trillium.kvcompress.scoring.cross_layer import cross_layer_importance

__all__ = ["PureKV"]


@dataclass
class PureKV(Policy):
    scoring_layer: int = param(
        -1, "layer whose attention scores deeper layers (-1: num_layers // 4)", minimum=-1
    )
    n_sinks: int = param(4, "attention-sink tokens always kept", minimum=0)
    window: int = param(32, "observation window: trailing prompt queries", minimum=1)

    name: ClassVar[str] = "purekv"
    summary: ClassVar[str] = (
        "cross-layer importance: low-layer attention x deep-layer ||v|| (arXiv 2510.25600)"
    )

    def resolved_scoring_layer(self, num_layers: int) -> int:
        layer = num_layers // 4 if self.scoring_layer < 0 else self.scoring_layer
        return min(layer, num_layers - 1)

    def scored_rows(self, layout: TokenLayout) -> torch.Tensor:
        return window_rows(layout, self.window)

    def compress_layer(self, inputs: LayerInputs) -> LayerResult:
        length = inputs.length
        n_keep = self.tokens_to_keep(length)
        observed = observation_rows(inputs.layout, self.window)
        scoring_layer = self.resolved_scoring_layer(inputs.num_layers)
        if inputs.layer_idx <= scoring_layer:
            scores = inputs.window_scores(observed.rows)
            if inputs.layer_idx == scoring_layer:
                inputs.state["clie_scores"] = scores
        else:
            low = inputs.state["clie_scores"]
            scores = cross_layer_importance(low.unsqueeze(0), inputs.values.unsqueeze(0))[0]
        forced = observed.forced.clone()
        forced[: self.n_sinks] = True
        kept = topk_with_forced(scores, n_keep, forced)
        return LayerResult.select(inputs.keys, inputs.values, kept)
