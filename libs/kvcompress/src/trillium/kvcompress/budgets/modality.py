"""Per-modality budgets.

* MadaKV modality preference adaptation, MPA (arXiv 2506.15724): head ``h`` of layer ``l`` splits its
  budget ``phi^l`` in proportion to the window attention mass it gives each modality,
  ``phi_m^{l,h} = w_m / sum_m' w_m' * phi^l`` (generalised from {text, image} to any modality set —
  our design choice).
* AccKV layer-adaptive focusing (arXiv 2511.11106): per layer, the mean accumulated attention of text
  queries to video and audio tokens, normalised so that ``W_v + W_a = 1``.
"""

from __future__ import annotations

import torch

__all__ = ["focusing_weights", "proportional_split"]


def proportional_split(mass: torch.Tensor, capacity: torch.Tensor, total: int) -> torch.Tensor:
    """Split ``total`` tokens over modalities in proportion to ``mass``, never above ``capacity``.

    Args:
        mass: ``[M]`` non-negative attention mass per modality.
        capacity: ``[M]`` tokens available per modality.
        total: tokens to give out (clipped to ``capacity.sum()``).

    Returns:
        ``[M]`` int64 counts summing to ``min(total, capacity.sum())``; shares that hit a capacity are
        redistributed to the others (water filling), remainders by largest fractional part.
    """
    capacity = capacity.long()
    total = min(int(total), int(capacity.sum()))
    weights = mass.double().clamp_min(0) * (capacity > 0)
    if float(weights.sum()) <= 0:
        weights = capacity.double()
    share = torch.zeros_like(weights)
    free = capacity > 0
    left = float(total)
    for _ in range(mass.numel()):
        w = weights * free
        if float(w.sum()) <= 0 or left <= 0:
            break
        proposal = w / w.sum() * left
        over = free & (share + proposal >= capacity.double())
        if not bool(over.any()):
            share = share + proposal
            break
        left -= float((capacity.double() - share)[over].sum())
        share[over] = capacity.double()[over]
        free &= ~over
    counts = share.floor().long().minimum(capacity)
    shortfall = total - int(counts.sum())
    if shortfall > 0:
        frac = (share - counts.double()).masked_fill(counts >= capacity, -1.0)
        order = torch.argsort(frac, descending=True, stable=True)
        for m in order.tolist():
            if shortfall == 0:
                break
            if counts[m] < capacity[m]:
                counts[m] += 1
                shortfall -= 1
    return counts


def focusing_weights(mean_attention: dict[int, float]) -> dict[int, float]:
    """AccKV ``W_m = S_m / sum_m' S_m'`` from mean text->modality attention ``S_m`` (uniform if all 0)."""
    total = sum(max(v, 0.0) for v in mean_attention.values())
    if total <= 0:
        return {m: 1.0 / len(mean_attention) for m in mean_attention}
    return {m: max(v, 0.0) / total for m, v in mean_attention.items()}
