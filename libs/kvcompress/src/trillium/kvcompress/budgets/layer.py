"""Budget conventions and per-layer budgets.

A budget is either the fraction of prompt tokens kept, a float in ``(0, 1]`` (papers' "20% budget" =
``0.2``; ``1.0`` keeps everything), or an absolute token count, an ``int >= 1`` (AccKV on AVicuna
quotes 160 and 120 tokens). It is resolved per layer and KV head to a token count.

PyramidKV (arXiv 2406.02069): per-layer budgets decrease linearly with depth. With ``b`` the mean
budget outside the observation window, layer 0 keeps ``2b - b/beta``, the last layer ``b/beta``
(``beta = 20``), plus the window in every layer (code: KVCache-Factory).
"""

from __future__ import annotations

import math

__all__ = ["pyramid_layer_budgets", "resolve_budget", "validate_budget"]


def validate_budget(budget: float | int, *, argument: str = "budget") -> float | int:
    """Return ``budget`` if it is a fraction in ``(0, 1]`` or an int ``>= 1``; else ``ValueError``."""
    if isinstance(budget, bool) or not isinstance(budget, int | float):
        raise ValueError(f"{argument} must be a float in (0, 1] or an int >= 1, got {budget!r}")
    if isinstance(budget, int):
        if budget < 1:
            raise ValueError(f"{argument} as a token count must be >= 1, got {budget}")
    elif not (0.0 < budget <= 1.0) or math.isnan(budget):
        raise ValueError(f"{argument} as a fraction must lie in (0, 1], got {budget}")
    return budget


def resolve_budget(budget: float | int, length: int) -> int:
    """Tokens kept out of ``length``: ``floor(budget * length)`` (at least 1) for a fraction, else
    ``min(budget, length)``."""
    validate_budget(budget)
    if length <= 0:
        return 0
    if isinstance(budget, int):
        return min(budget, length)
    if budget >= 1.0:
        return length
    return max(1, min(length, int(budget * length + 1e-9)))


def pyramid_layer_budgets(
    mean_budget: int, num_layers: int, window: int, beta: float = 20.0, capacity: int | None = None
) -> list[int]:
    """PyramidKV per-layer token counts (window included) summing to ``num_layers * mean_budget``.

    Args:
        mean_budget: the uniform per-layer budget it replaces (tokens, window included).
        num_layers: decoder layers.
        window: observation-window tokens kept in every layer.
        beta: ratio between the average and the top layer's prefix budget.
        capacity: prompt length; a layer never keeps more, and what a capped layer cannot use goes
            to the others (our design choice, so that the total budget is spent).
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    capacity = capacity if capacity is not None else 2 * mean_budget + window
    prefix = max(mean_budget - window, 0)
    if num_layers == 1 or prefix == 0:
        return [min(mean_budget, capacity)] * num_layers
    low = prefix / beta
    high = 2 * prefix - low
    step = (high - low) / (num_layers - 1)
    shares = [high - layer * step + window for layer in range(num_layers)]
    shares = _cap_and_redistribute(shares, float(capacity))
    counts = [math.floor(s) for s in shares]
    target = min(num_layers * mean_budget, num_layers * capacity)
    by_fraction = sorted(range(num_layers), key=lambda i: shares[i] - counts[i], reverse=True)
    for i in by_fraction[: max(target - sum(counts), 0)]:
        counts[i] += 1
    return [max(1, min(c, capacity)) for c in counts]


def _cap_and_redistribute(shares: list[float], capacity: float) -> list[float]:
    shares = list(shares)
    for _ in range(len(shares)):
        excess = sum(max(s - capacity, 0.0) for s in shares)
        shares = [min(s, capacity) for s in shares]
        room = [i for i, s in enumerate(shares) if s < capacity]
        if excess <= 1e-9 or not room:
            break
        for i in room:
            shares[i] += excess / len(room)
    return shares
