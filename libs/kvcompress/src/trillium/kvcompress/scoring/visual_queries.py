"""Sampled media query rows and FlowMM's cross-modal interaction ratio (arXiv 2511.05534, eq. 6).

A trailing text window only gives text->* attention. FlowMM's ``rho^l`` also needs media->text
mass, so we recompute the attention rows of ``s`` query tokens sampled evenly inside every image,
video frame and audio unit (our design choice — the paper does not say how ``rho`` is obtained
under FlashAttention). The paper covers images and text; we count every non-text modality as
"visual" in ``rho`` (video and audio alike), so that an audio-video prompt's audio is not ignored.
"""

from __future__ import annotations

import torch

from trillium.kvcompress.layout import Modality, TokenLayout

__all__ = ["interaction_ratio", "sample_media_rows", "sample_visual_rows"]


def sample_media_rows(
    layout: TokenLayout, per_unit: int = 4, audio_steps_per_unit: int = 25, *, audio: bool = True
) -> torch.Tensor:
    """Indices of ``per_unit`` evenly spaced tokens in every image, video frame and (if ``audio``)
    audio unit of ``audio_steps_per_unit`` steps (sorted, ``[P_m]``)."""
    if per_unit < 1:
        raise ValueError(f"per_unit must be >= 1, got {per_unit}")
    media = ~layout.mask(Modality.TEXT) if audio else layout.mask((Modality.IMAGE, Modality.VIDEO))
    if not bool(media.any()):
        return torch.zeros(0, dtype=torch.long)
    units = layout.unit_ids(audio_steps_per_unit)
    rows = []
    for unit in torch.unique(units[media]).tolist():
        members = torch.nonzero(units == unit).flatten()
        take = torch.linspace(0, members.numel() - 1, min(per_unit, members.numel())).round().long()
        rows.append(members[take.unique()])
    return torch.cat(rows).sort().values


def sample_visual_rows(layout: TokenLayout, per_unit: int = 4) -> torch.Tensor:
    """:func:`sample_media_rows` of the image and video tokens only."""
    return sample_media_rows(layout, per_unit, audio=False)


def interaction_ratio(probs: torch.Tensor, rows: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """FlowMM ``rho^l = (1/H) sum_h (A_{m->t} + A_{t->m}) / A`` from sampled attention rows, ``m``
    every non-text token.

    Args:
        probs: ``[B, H_q, P, L]`` attention rows of the query tokens ``rows`` ``[P]``.
        rows: prompt indices of the queries (text and media).
        layout: the prompt layout (``L`` tokens).

    Returns:
        ``[B]`` float32 ratio in ``[0, 1]``.
    """
    text = layout.mask(Modality.TEXT)
    media = ~text
    q_text, q_media = text[rows], media[rows]
    mass_to_text = probs[..., text].sum(dim=-1)  # [B, H, P]
    mass_to_media = probs[..., media].sum(dim=-1)
    m_to_t = mass_to_text[..., q_media].sum(dim=-1)
    t_to_m = mass_to_media[..., q_text].sum(dim=-1)
    total = probs.sum(dim=(-1, -2)).clamp_min(1e-12)
    return ((m_to_t + t_to_m) / total).mean(dim=1)
