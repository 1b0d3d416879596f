"""Sampled visual query rows and FlowMM's cross-modal interaction ratio (arXiv 2511.05534, eq. 6).

A trailing text window only gives text->* attention. FlowMM's ``rho^l`` also needs visual->text
mass, so we recompute the attention rows of ``s`` query tokens sampled evenly inside every image /
video frame (our design choice — the paper does not say how ``rho`` is obtained under FlashAttention).
"""

from __future__ import annotations

import torch

from trillium.kvcompress.layout import VISUAL_MODALITIES, Modality, TokenLayout

__all__ = ["interaction_ratio", "sample_visual_rows"]


def sample_visual_rows(layout: TokenLayout, per_unit: int = 4) -> torch.Tensor:
    """Indices of ``per_unit`` evenly spaced tokens in every image / video frame (sorted, ``[P_v]``)."""
    if per_unit < 1:
        raise ValueError(f"per_unit must be >= 1, got {per_unit}")
    visual = layout.mask(VISUAL_MODALITIES)
    if not bool(visual.any()):
        return torch.zeros(0, dtype=torch.long)
    units = layout.unit_ids()
    rows = []
    for unit in torch.unique(units[visual]).tolist():
        members = torch.nonzero(units == unit).flatten()
        take = torch.linspace(0, members.numel() - 1, min(per_unit, members.numel())).round().long()
        rows.append(members[take.unique()])
    return torch.cat(rows).sort().values


def interaction_ratio(probs: torch.Tensor, rows: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """FlowMM ``rho^l = (1/H) sum_h (A_{v->t} + A_{t->v}) / A`` from sampled attention rows.

    Args:
        probs: ``[B, H_q, P, L]`` attention rows of the query tokens ``rows`` ``[P]``.
        rows: prompt indices of the queries (text and visual).
        layout: the prompt layout (``L`` tokens).

    Returns:
        ``[B]`` float32 ratio in ``[0, 1]``.
    """
    text = layout.mask(Modality.TEXT)
    visual = layout.mask(VISUAL_MODALITIES)
    q_text, q_visual = text[rows], visual[rows]
    mass_to_text = probs[..., text].sum(dim=-1)  # [B, H, P]
    mass_to_visual = probs[..., visual].sum(dim=-1)
    v_to_t = mass_to_text[..., q_visual].sum(dim=-1)
    t_to_v = mass_to_visual[..., q_text].sum(dim=-1)
    total = probs.sum(dim=(-1, -2)).clamp_min(1e-12)
    return ((v_to_t + t_to_v) / total).mean(dim=1)
