"""AccKV (arXiv 2511.11106): adaptive-focusing, cross-calibration KV compression for audio-video LLMs.

1. Attention redistribution: accumulated attention with entry ``(i, j)`` weighted by
   ``(i + 1) / (l - j)``, removing the early-token bias of H2O scores.
2. Layer-adaptive focusing: ``W_v, W_a`` = normalised mean attention of the text queries to video
   and audio tokens; video scores x ``W_v``, audio scores x ``W_a``; the larger ``W`` marks the
   layer's high-priority modality.
3. Intra-modal merging: per modality keep the top tokens; the rest are averaged into merged KV,
   never across modalities (audio is never merged with video).
4. Cross-calibration: a low-priority entry survives only if ``mean_j cos(k_i, k_j^{high}) >= tau``.

Confirmed: only through a secondary summary of the paper (formulas above); no public code.
Our choices (the paper does not specify): ``scoring="full"`` (exact, row chunks; the ``"auto"``
default on CPU) or ``"window"`` (``l - j`` replaced by the window queries seeing ``j``; ``"auto"`` on
accelerators);
text queries = trailing text tokens of the window; text kept in full (top text if text alone
exceeds the budget), the rest split between video and audio as ``W_v : W_a``; one merged token per
video frame and per ``audio_steps_per_unit`` audio steps, counted against the modality's budget;
``tau = 0.6`` per (layer, KV head) against all high-priority prompt keys; merged keys are averages
of post-RoPE keys (no re-rotation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from trillium.kvcompress.budgets.modality import focusing_weights, proportional_split
from trillium.kvcompress.layout import Modality, TokenLayout
from trillium.kvcompress.merging.intra_modal import average_units, cross_calibration_scores
from trillium.kvcompress.policies.base import (
    LayerInputs,
    LayerResult,
    Policy,
    observation_window,
    param,
    window_rows,
)
from trillium.kvcompress.scoring.redistribution import (
    redistributed_scores_from_queries,
    redistributed_scores_window,
)
from trillium.kvcompress.scoring.window import gqa_mean, window_indices

__all__ = ["AccKV"]

_AV = (Modality.VIDEO, Modality.AUDIO)


@dataclass
class AccKV(Policy):
    scoring: str = param(
        "auto",
        "redistributed scores from all prompt queries ('full'), the window only ('window'), "
        "or 'auto' = full on CPU, window on accelerators",
        choices=("auto", "full", "window"),
    )
    window: int = param(32, "observation window (text queries, window scoring)", minimum=1)
    tau: float = param(0.6, "cross-calibration threshold on mean key cosine", minimum=-1.0, maximum=1.0)
    audio_steps_per_unit: int = param(25, "audio steps averaged into one merged token", minimum=1)
    merge: bool = param(True, "average non-kept tokens per frame / audio unit")
    calibrate: bool = param(True, "evict low-priority entries whose key cosine is below tau")
    chunk_size: int = param(256, "query rows per chunk in full scoring", minimum=1)

    name: ClassVar[str] = "acckv"
    summary: ClassVar[str] = (
        "redistributed attention, adaptive focusing, intra-modal merge, calibration (arXiv 2511.11106)"
    )
    required_modalities: ClassVar[tuple[Modality, ...]] = (Modality.VIDEO, Modality.AUDIO)

    # ------------------------------------------------------------ scores and weights
    @torch.no_grad()
    def _scores(self, inputs: LayerInputs, rows: torch.Tensor) -> torch.Tensor:
        mode = self.scoring
        if mode == "auto":
            mode = "full" if inputs.keys.device.type == "cpu" else "window"
        if mode == "full":
            return redistributed_scores_from_queries(
                inputs.row_queries, inputs.keys.unsqueeze(0), inputs.scaling, chunk_size=self.chunk_size
            )[0]
        probs = inputs.attention_rows(rows).unsqueeze(0)
        return redistributed_scores_window(probs, rows, inputs.num_kv_heads)[0]

    @staticmethod
    def focusing(inputs: LayerInputs, text_rows: torch.Tensor) -> dict[Modality, float]:
        """``{VIDEO: W_v, AUDIO: W_a}`` from the text queries' mean attention per token."""
        received = gqa_mean(inputs.attention_rows(text_rows).sum(dim=1).unsqueeze(0), inputs.num_kv_heads)[0]
        per_token = received.mean(dim=0)
        means = {m: float(per_token[inputs.layout.mask(m)].mean()) for m in _AV}
        return focusing_weights(means)

    # ------------------------------------------------------------ compression
    def scored_rows(self, layout: TokenLayout) -> torch.Tensor | None:
        return window_rows(layout, self.window) if self.scoring == "window" else None  # "auto": full on CPU

    def compress_layer(self, inputs: LayerInputs) -> LayerResult:
        layout, length = inputs.layout, inputs.length
        n_keep = self.tokens_to_keep(length)
        rows = window_indices(length, max(observation_window(layout, self.window), 1))
        text_rows = rows[layout.mask(Modality.TEXT)[rows]]
        weights = self.focusing(inputs, text_rows if text_rows.numel() else rows)
        high = max(_AV, key=lambda m: (weights[m], m == Modality.VIDEO))
        low = Modality.AUDIO if high == Modality.VIDEO else Modality.VIDEO
        scores = self._scores(inputs, rows).clone()
        for m in _AV:
            scores[:, layout.mask(m)] *= weights[m]
        inputs.state.setdefault("weights", {})[inputs.layer_idx] = {m.label: w for m, w in weights.items()}
        inputs.state.setdefault("high_priority", {})[inputs.layer_idx] = high.label
        text = torch.nonzero(layout.mask(Modality.TEXT)).flatten()
        if text.numel() >= n_keep:
            kept = [
                text[scores[h, text].topk(n_keep).indices].sort().values for h in range(inputs.num_kv_heads)
            ]
            return LayerResult.select(inputs.keys, inputs.values, kept)
        counts = [int(layout.mask(m).sum()) for m in _AV]
        split = proportional_split(
            torch.tensor([weights[m] for m in _AV]), torch.tensor(counts), n_keep - text.numel()
        )
        budgets = dict(zip(_AV, split.tolist()))
        units = layout.unit_ids(self.audio_steps_per_unit)
        heads = [
            self._compress_head(
                inputs=inputs,
                head=h,
                scores=scores[h],
                text=text,
                budgets=budgets,
                units=units,
                high=high,
                low=low,
            )
            for h in range(inputs.num_kv_heads)
        ]
        return LayerResult(
            keys=[e[0] for e in heads],
            values=[e[1] for e in heads],
            sources=[e[2] for e in heads],
            merged=[e[3] for e in heads],
        )

    def _modality_entries(
        self,
        *,
        keys: torch.Tensor,
        values: torch.Tensor,
        scores: torch.Tensor,
        members: torch.Tensor,
        budget: int,
        units: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top tokens of one modality + one averaged token per unit of the rest (within budget)."""
        n_units = int(units[members].unique().numel())
        merging = self.merge and budget > n_units and budget < members.numel()
        top = budget - n_units if merging else min(budget, members.numel())
        kept = members[scores[members].topk(top).indices]
        k, v = keys[kept], values[kept]
        src, merged = kept, torch.zeros(kept.numel(), dtype=torch.long)
        if merging:
            rest = members[~torch.isin(members, kept)]
            mk, mv, first = average_units(keys, values, rest, units[rest])
            k, v = torch.cat([k, mk]), torch.cat([v, mv])
            src = torch.cat([src, first])
            merged = torch.cat([merged, torch.bincount(torch.unique(units[rest], return_inverse=True)[1])])
        return k, v, src, merged

    def _compress_head(
        self,
        *,
        inputs: LayerInputs,
        head: int,
        scores: torch.Tensor,
        text: torch.Tensor,
        budgets: dict[Modality, int],
        units: torch.Tensor,
        high: Modality,
        low: Modality,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        keys, values, layout = inputs.keys[head], inputs.values[head], inputs.layout
        parts = {Modality.TEXT: (keys[text], values[text], text, torch.zeros(text.numel(), dtype=torch.long))}
        for m in _AV:
            members = torch.nonzero(layout.mask(m)).flatten()
            parts[m] = self._modality_entries(
                keys=keys, values=values, scores=scores, members=members, budget=budgets[m], units=units
            )
        if self.calibrate:
            high_keys = keys[layout.mask(high)]
            k, v, src, merged = parts[low]
            aligned = cross_calibration_scores(k, high_keys) >= self.tau
            parts[low] = (k[aligned], v[aligned], src[aligned], merged[aligned])
        k = torch.cat([p[0] for p in parts.values()])
        v = torch.cat([p[1] for p in parts.values()])
        src = torch.cat([p[2] for p in parts.values()])
        merged = torch.cat([p[3] for p in parts.values()])
        order = torch.argsort(src, stable=True)
        return k[order], v[order], src[order], merged[order]
