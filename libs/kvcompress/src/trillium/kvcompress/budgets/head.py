"""AdaKV head-adaptive budgets (arXiv 2407.11550).

A layer's total budget ``H * n`` is allocated across its KV heads by a global top-k over all heads'
scores, with a safeguard: every head first keeps its own top ``ceil(alpha * n)`` tokens
(kvpress ``alpha_safeguard = 0.2``). Heads whose attention is concentrated get fewer tokens, dispersed
heads more; the result is a ragged per-head cache.
"""

from __future__ import annotations

import math

import torch

__all__ = ["adaptive_head_selection"]


def adaptive_head_selection(
    scores: torch.Tensor, per_head_budget: int, alpha: float = 0.2, forced: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """Indices kept per head.

    Args:
        scores: ``[H, L]`` comparable scores across heads (higher = keep).
        per_head_budget: ``n``; the layer keeps ``H * n`` entries in total.
        alpha: safeguard fraction in ``[0, 1]``.
        forced: optional ``[L]`` bool, tokens every head keeps (counted in its budget).

    Returns:
        ``H`` sorted int64 index tensors; their sizes sum to ``H * min(n, L)``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    num_heads, length = scores.shape
    n = min(per_head_budget, length)
    work = scores.float().clone()
    if forced is not None:
        work[:, forced] = float("inf")
    floor = min(n, math.ceil(alpha * n))
    keep = torch.zeros(num_heads, length, dtype=torch.bool)
    if floor:
        keep.scatter_(1, work.topk(floor, dim=1).indices, True)
    if forced is not None:
        keep[:, forced] = True
    remaining = num_heads * n - int(keep.sum())
    if remaining > 0:
        rest = work.masked_fill(keep, float("-inf")).flatten()
        keep.view(-1)[rest.topk(remaining).indices] = True
    return [torch.nonzero(keep[h]).flatten() for h in range(num_heads)]
