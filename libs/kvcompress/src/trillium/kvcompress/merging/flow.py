"""FlowMM information-flow-guided merging (arXiv 2511.05534, eqs. 6-10).

* Gate: a layer with interaction ratio ``rho^l > theta`` merges cross-modally (a token may go to a
  pivot of any modality), otherwise intra-modally (the pivot must share the token's modality).
* Sensitivity-adaptive matching: non-pivot ``i`` merges into ``argmax_{j in K^p, I_j <= tau} u_ij``
  (cosine of keys); pivots with importance ``I_j > tau`` are never merge targets.
  ``tau`` is the ``protect_quantile`` quantile of the pivots' importance (our design choice).
* Merge (our design choice, the paper leaves ``f_merge`` open): a weighted mean of the pivot and the
  tokens it absorbs, each weighted by the attention it received (:func:`weighted_merge`), and only
  for pairs whose key cosine is at least ``min_similarity``; the rest are evicted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["flow_eligibility", "matching", "protection_threshold", "weighted_merge"]


def protection_threshold(pivot_importance: torch.Tensor, protect_quantile: float) -> float:
    """``tau``: the ``protect_quantile`` quantile of ``pivot_importance`` ``[n]``.

    ``1.0`` gives the maximum, so no pivot is protected."""
    if not 0.0 <= protect_quantile <= 1.0:
        raise ValueError(f"protect_quantile must lie in [0, 1], got {protect_quantile}")
    if pivot_importance.numel() == 0:
        return float("inf")
    return float(torch.quantile(pivot_importance.float(), protect_quantile))


def matching(
    source_keys: torch.Tensor,
    pivot_keys: torch.Tensor,
    protected: torch.Tensor,
    modalities: tuple[torch.Tensor, torch.Tensor] | None,
    min_similarity: float,
) -> torch.Tensor:
    """Sensitivity-adaptive matching: each source's most key-similar eligible pivot, or ``-1``.

    Args:
        source_keys: ``[m, D]`` keys of the tokens to merge.
        pivot_keys: ``[n, D]``.
        protected: ``[n]`` bool, pivots with ``I > tau`` (never targets).
        modalities: ``(source [m], pivot [n])`` modality ids for an intra-modal layer (the pivot must
            share the source's modality), None for a cross-modal one.
        min_similarity: pairs whose key cosine is below this are not merged (``-1``).

    Returns:
        ``[m]`` int64 pivot index per source. Equals :func:`flow_eligibility` + ``nearest_pivots``
        + the similarity floor, without building the ``[m, n]`` eligibility matrix.
    """
    targets = torch.nonzero(~protected).flatten()  # protected pivots are left out of the product
    if source_keys.shape[0] == 0 or targets.numel() == 0:
        return torch.full((source_keys.shape[0],), -1, dtype=torch.long)
    sim = F.normalize(source_keys.float(), dim=-1) @ F.normalize(pivot_keys[targets].float(), dim=-1).T
    if modalities is not None and torch.cat(modalities).unique().numel() > 1:
        source_modality, pivot_modality = modalities
        sim.masked_fill_(source_modality.unsqueeze(1) != pivot_modality[targets].unsqueeze(0), float("-inf"))
    best = sim.max(dim=1)
    return torch.where(best.values >= min_similarity, targets[best.indices], -1)


def flow_eligibility(
    source_modality: torch.Tensor,
    pivot_modality: torch.Tensor,
    pivot_importance: torch.Tensor,
    *,
    cross_modal: bool,
    tau: float,
) -> torch.Tensor:
    """``[m, n]`` bool: may source ``i`` merge into pivot ``j``.

    Args:
        source_modality: ``[m]`` modality ids of the tokens to merge.
        pivot_modality: ``[n]`` modality ids of the pivots.
        pivot_importance: ``[n]`` importance ``I_j``.
        cross_modal: the layer gate (``rho^l > theta``).
        tau: protection threshold.
    """
    allowed = (pivot_importance <= tau).unsqueeze(0).expand(source_modality.numel(), -1)
    if not cross_modal:
        allowed = allowed & (source_modality.unsqueeze(1) == pivot_modality.unsqueeze(0))
    return allowed


def weighted_merge(
    pivot_keys: torch.Tensor,
    pivot_values: torch.Tensor,
    *,
    pivot_weight: torch.Tensor,
    source_keys: torch.Tensor,
    source_values: torch.Tensor,
    source_weight: torch.Tensor,
    assignment: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fold each source into its pivot as a weighted mean: ``k' = (w_p k_p + sum_i w_i k_i) /
    (w_p + sum_i w_i)`` (values likewise).

    The weight of an entry is how much it stands for: its attention mass (FlowMM's importance ``I``)
    or its token count. The paper names the merge functions ``f_merge``/``g_merge`` without defining
    them; LOOK-M's 50/50 average of pivot and merged mean, which we used before, lets eight
    low-importance tokens rewrite half of a pivot the question needs. Our choice: the weighted mean,
    so that a merged entry stays close to the pivot in proportion to the attention it received.

    Args:
        pivot_keys, pivot_values: ``[n, D]``, ``[n, D_v]``.
        pivot_weight: ``[n]`` non-negative.
        source_keys, source_values: ``[m, D]``, ``[m, D_v]``.
        source_weight: ``[m]`` non-negative.
        assignment: ``[m]`` pivot index per source, ``-1`` = evict without merging.

    Returns:
        merged keys ``[n, D]``, values ``[n, D_v]`` and ``[n]`` number of sources per pivot.
    """
    n = pivot_keys.shape[0]
    used = assignment >= 0
    target = assignment[used]
    weight = source_weight[used].float().unsqueeze(1)
    own = pivot_weight.float().clamp_min(0).unsqueeze(1)
    total = own.clone().index_add_(0, target, weight)
    keys = (pivot_keys.float() * own).index_add_(0, target, source_keys[used].float() * weight)
    values = (pivot_values.float() * own).index_add_(0, target, source_values[used].float() * weight)
    merged = total.squeeze(1) > 0
    keys = torch.where(merged.unsqueeze(1), keys / total.clamp_min(1e-30), pivot_keys.float())
    values = torch.where(merged.unsqueeze(1), values / total.clamp_min(1e-30), pivot_values.float())
    counts = torch.bincount(target, minlength=n)
    return keys.to(pivot_keys.dtype), values.to(pivot_values.dtype), counts
