"""MadaKV hierarchical compression compensation, HCC (arXiv 2506.15724; formulas as summarised by
a secondary source).

Per head and modality, the demand is the smallest number of tokens holding a fraction ``theta`` of
the modality's window attention: ``k_m^{l,h} = min{|C| : C in X_m, sum_C psi >= theta * w_m}``. The
layer imbalance ``K^l = sum_h (sum_m k_m^{l,h} - phi^l)`` is paid back by the remaining layers:
``phi^{l+1} = phi^l - K^l / (L - l)``, ``l`` 1-based over ``L`` layers.

Bounds (our design choice): ``phi`` is clamped to ``[minimum, prompt length]`` and to what the total
budget ``L * phi^1`` still allows after the layers already compressed, so the whole cache never
exceeds the uniform budget's size.
"""

from __future__ import annotations

import torch

__all__ = ["hcc_demand", "hcc_next_budget"]


def hcc_demand(scores: torch.Tensor, member: torch.Tensor, theta: float) -> torch.Tensor:
    """``k_m^{l,h}`` per head: ``scores`` ``[H, L]`` (psi), ``member`` ``[L]`` bool (X_m) -> ``[H]`` int64."""
    if not 0.0 < theta <= 1.0:
        raise ValueError(f"theta must lie in (0, 1], got {theta}")
    n_member = int(member.sum())
    if n_member == 0:
        return torch.zeros(scores.shape[0], dtype=torch.long)
    psi = scores[:, member].float().sort(dim=1, descending=True).values
    target = theta * psi.sum(dim=1, keepdim=True)
    reached_before = psi.cumsum(dim=1) - psi < target - 1e-7 * target.abs().clamp_min(1e-30)
    demand = reached_before.sum(dim=1)
    demand = torch.where(target.squeeze(1) <= 0, torch.zeros_like(demand), demand)
    return demand.clamp(max=n_member)


def hcc_next_budget(
    phi: float,
    imbalance: float,
    layer_idx: int,
    num_layers: int,
    *,
    minimum: float,
    maximum: float,
    total_budget: float,
    spent: float,
) -> float:
    """``phi^{l+1}`` from ``phi^l`` (``layer_idx`` is 0-based ``l - 1``), clamped as described above.

    Args:
        phi: this layer's budget ``phi^l`` (tokens per head).
        imbalance: ``K^l``.
        layer_idx: 0-based index of layer ``l``.
        num_layers: ``L``.
        minimum, maximum: per-layer clamp.
        total_budget: budget of all layers together (per head).
        spent: budget used by layers ``0..layer_idx``.
    """
    remaining = num_layers - 1 - layer_idx
    if remaining <= 0:
        return phi
    proposal = phi - imbalance / remaining
    affordable = total_budget - spent - minimum * (remaining - 1)
    return float(max(minimum, min(proposal, maximum, affordable)))
