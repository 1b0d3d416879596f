"""MadaKV (arXiv 2506.15724): modality-adaptive KV eviction for multimodal LLMs.

* MPA (modality preference adaptation): head ``h`` of layer ``l`` splits its budget ``phi^l`` over
  modalities in proportion to the window attention mass ``w_m = sum_{i in X_m} psi(i)`` it gives
  each of them, then keeps the top tokens by ``psi`` **within** each modality.
* HCC (hierarchical compression compensation): per head and modality the demand ``k_m`` is the
  fewest tokens holding ``theta`` of ``w_m``; a head keeps its demand ``sum_m k_m`` (so a layer whose
  attention is spread gets more than ``phi^l`` and a focused one less), and the layer imbalance
  ``K^l`` against ``phi^l`` is repaid by later layers, ``phi^{l+1} = phi^l - K^l / (L - l)``.

Confirmed: only through secondary summaries of the paper (formulas above). Our choices (the paper
does not specify): ``theta = 0.9``; ``phi^1`` = the uniform budget; ``K^l`` is the *mean* over heads
of ``kept_h - phi^l`` (the summary's sum over heads mixes units with the per-head ``phi``: with it,
one spread-out layer drove every later layer to the window and the cache to ~3% at a 20% budget);
a head keeps ``clamp(sum_m k_m, floor, min(2 phi^l, L_prompt, affordable))`` where ``affordable``
is what the total uniform budget still allows after reserving the floor for later layers, so the
whole cache never exceeds the uniform budget's size. The **per-layer floor** (``layer_floor``, half
the uniform budget by default) is ours too: at ``theta = 0.9`` the demand is 70-90% of all tokens,
every head hit the ``2 phi`` cap and ``phi`` then fell linearly to the window (1228 -> ... -> 32 on
a 3k prompt), so the deep layers kept only the question; with the floor no layer is starved and
HCC still moves budget between layers. The observation window (the shared
:func:`~trillium.kvcompress.policies.base.observation_rows`) is kept in every head and counted in
its budget; the split generalises to any modality set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from trillium.kvcompress.budgets.hcc import hcc_demand, hcc_next_budget
from trillium.kvcompress.budgets.modality import proportional_split
from trillium.kvcompress.layout import Modality, TokenLayout
from trillium.kvcompress.policies.base import (
    LayerInputs,
    LayerResult,
    Policy,
    observation_rows,
    param,
    window_rows,
)

__all__ = ["MadaKV", "modality_topk"]


def modality_topk(scores: torch.Tensor, modality: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Indices of the top ``counts[m]`` tokens by ``scores`` ``[L]`` inside each modality ``m``."""
    picked = []
    for m in range(counts.numel()):
        if int(counts[m]) == 0:
            continue
        members = torch.nonzero(modality == m).flatten()
        picked.append(members[scores[members].topk(int(counts[m])).indices])
    return torch.cat(picked) if picked else torch.zeros(0, dtype=torch.long)


@dataclass
class MadaKV(Policy):
    window: int = param(32, "proxy tokens P: trailing prompt queries scoring the cache", minimum=1)
    theta: float = param(
        0.9,
        "HCC: attention share a head's demand must cover",
        minimum=0.0,
        maximum=1.0,
        exclusive_minimum=True,
    )
    use_mpa: bool = param(True, "split each head's budget by modality preference (else plain top-k)")
    use_hcc: bool = param(True, "compensate budgets across layers (else uniform per layer)")
    layer_floor: float = param(
        0.5, "HCC: no layer keeps less than this share of the uniform budget", minimum=0.0, maximum=1.0
    )

    text_only_form: ClassVar[bool] = True  # all text: MPA has one modality, HCC moves budget across layers
    name: ClassVar[str] = "madakv"
    required_modalities: ClassVar[tuple[Modality, ...]] = (Modality.TEXT,)
    needs_non_text: ClassVar[bool] = True
    summary: ClassVar[str] = "per-head modality budgets + cross-layer compensation (arXiv 2506.15724)"

    def scored_rows(self, layout: TokenLayout) -> torch.Tensor:
        return window_rows(layout, self.window)

    def compress_layer(self, inputs: LayerInputs) -> LayerResult:
        length, layout = inputs.length, inputs.layout
        n_keep = self.tokens_to_keep(length)
        observed = observation_rows(layout, self.window)
        forced = observed.forced.clone()
        if int(forced.sum()) > n_keep:
            forced[: length - n_keep] = False
        floor = min(max(int(forced.sum()), math.ceil(self.layer_floor * n_keep), 1), n_keep)
        state = inputs.state
        if inputs.layer_idx == 0:
            state.update(phi=float(n_keep), spent=0.0, phi_history=[], demand_history=[])
        phi = int(round(min(max(state["phi"], floor), length)))
        psi = inputs.window_scores(observed.rows)
        budgets = [phi] * inputs.num_kv_heads
        if self.use_hcc:
            demand = sum(hcc_demand(psi, layout.mask(m), self.theta) for m in sorted(layout.modalities()))
            budgets = self._head_budgets(demand, phi, floor, inputs, n_keep)
            state["demand_history"].append(demand.tolist())
        kept = [self._select_head(psi[h], layout, forced, b) for h, b in enumerate(budgets)]
        state["phi_history"].append(phi)
        if self.use_hcc:
            used = sum(budgets) / len(budgets)
            state["spent"] += used
            state["phi"] = hcc_next_budget(
                float(phi),
                used - phi,
                inputs.layer_idx,
                inputs.num_layers,
                minimum=float(floor),
                maximum=float(length),
                total_budget=float(n_keep * inputs.num_layers),
                spent=state["spent"],
            )
        return LayerResult.select(inputs.keys, inputs.values, kept)

    @staticmethod
    def _head_budgets(
        demand: torch.Tensor, phi: int, floor: int, inputs: LayerInputs, n_keep: int
    ) -> list[int]:
        """Per-head budgets: the HCC demand, clamped to ``[floor, min(2 phi, length, affordable)]``."""
        remaining = inputs.num_layers - 1 - inputs.layer_idx
        affordable = n_keep * inputs.num_layers - inputs.state["spent"] - floor * remaining
        cap = max(floor, min(2 * phi, inputs.length, int(affordable)))
        return [int(min(max(int(d), floor), cap)) for d in demand]

    def _select_head(
        self, psi: torch.Tensor, layout: TokenLayout, forced: torch.Tensor, phi: int
    ) -> torch.Tensor:
        free = ~forced
        rest = max(phi - int(forced.sum()), 0)
        if self.use_mpa:
            modality = layout.modality
            num_m = len(Modality)
            mass = torch.zeros(num_m).index_add_(0, modality[free], psi[free].float())
            capacity = torch.bincount(modality[free], minlength=num_m)
            counts = proportional_split(mass, capacity, rest)
            chosen = torch.nonzero(free).flatten()[modality_topk(psi[free], modality[free], counts)]
        else:
            candidates = torch.nonzero(free).flatten()
            chosen = candidates[psi[free].topk(min(rest, candidates.numel())).indices]
        return torch.cat([chosen, torch.nonzero(forced).flatten()]).sort().values
