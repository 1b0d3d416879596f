"""LOOK-M pivot merge (arXiv 2406.18139; code SUSTechBruce/LOOK-M).

Each evicted token goes to the kept key it is most similar to by cosine (its pivot ``k*``) and is
merged as ``(k_p + k*) / 2`` (values likewise); several contributions to one pivot are combined by
their mean, i.e. ``k*' = (k* + mean_p k_p) / 2``. Keys are post-RoPE as stored; nothing is re-rotated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["merge_into_pivots", "nearest_pivots"]


def nearest_pivots(
    source_keys: torch.Tensor, pivot_keys: torch.Tensor, eligible: torch.Tensor | None = None
) -> torch.Tensor:
    """Cosine-nearest eligible pivot of every source token.

    Args:
        source_keys: ``[m, D]`` keys of the tokens to merge.
        pivot_keys: ``[n, D]`` kept keys.
        eligible: optional ``[m, n]`` bool; ``False`` forbids a pair.

    Returns:
        ``[m]`` int64 pivot index, ``-1`` where no pivot is eligible.
    """
    if source_keys.shape[0] == 0 or pivot_keys.shape[0] == 0:
        return torch.full((source_keys.shape[0],), -1, dtype=torch.long)
    sim = F.normalize(source_keys.float(), dim=-1) @ F.normalize(pivot_keys.float(), dim=-1).T
    if eligible is not None:
        sim = sim.masked_fill(~eligible, float("-inf"))
    best = sim.max(dim=1)
    return torch.where(torch.isinf(best.values), torch.full_like(best.indices, -1), best.indices)


def merge_into_pivots(
    pivot_keys: torch.Tensor,
    pivot_values: torch.Tensor,
    source_keys: torch.Tensor,
    source_values: torch.Tensor,
    assignment: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply the LOOK-M merge.

    Args:
        pivot_keys, pivot_values: ``[n, D]``, ``[n, D_v]``.
        source_keys, source_values: ``[m, D]``, ``[m, D_v]``.
        assignment: ``[m]`` pivot index per source, ``-1`` = evict without merging.

    Returns:
        merged keys ``[n, D]``, merged values ``[n, D_v]`` and ``[n]`` number of sources per pivot.
    """
    n = pivot_keys.shape[0]
    used = assignment >= 0
    target = assignment[used]
    counts = torch.bincount(target, minlength=n)
    sum_k = torch.zeros(n, pivot_keys.shape[1], dtype=torch.float32).index_add_(
        0, target, source_keys[used].float()
    )
    sum_v = torch.zeros(n, pivot_values.shape[1], dtype=torch.float32).index_add_(
        0, target, source_values[used].float()
    )
    has = (counts > 0).unsqueeze(1)
    denom = counts.clamp_min(1).unsqueeze(1).float()
    keys = torch.where(has, (pivot_keys.float() + sum_k / denom) / 2, pivot_keys.float())
    values = torch.where(has, (pivot_values.float() + sum_v / denom) / 2, pivot_values.float())
    return keys.to(pivot_keys.dtype), values.to(pivot_values.dtype), counts
