"""FlowMM information-flow-guided merging (arXiv 2511.05534, eqs. 6-10).

* Gate: a layer with interaction ratio ``rho^l > theta`` merges cross-modally (a token may go to a
  pivot of any modality), otherwise intra-modally (the pivot must share the token's modality).
* Sensitivity-adaptive matching: non-pivot ``i`` merges into ``argmax_{j in K^p, I_j <= tau} u_ij``
  (cosine of keys); pivots with importance ``I_j > tau`` are never merge targets.
  ``tau`` is the ``protect_quantile`` quantile of the pivots' importance (our design choice).
"""

from __future__ import annotations

import torch

__all__ = ["flow_eligibility", "protection_threshold"]


def protection_threshold(pivot_importance: torch.Tensor, protect_quantile: float) -> float:
    """``tau``: the ``protect_quantile`` quantile of ``pivot_importance`` ``[n]``.

    ``1.0`` gives the maximum, so no pivot is protected."""
    if not 0.0 <= protect_quantile <= 1.0:
        raise ValueError(f"protect_quantile must lie in [0, 1], got {protect_quantile}")
    if pivot_importance.numel() == 0:
        return float("inf")
    return float(torch.quantile(pivot_importance.float(), protect_quantile))


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
