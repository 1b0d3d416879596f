"""H2O accumulated attention (arXiv 2306.14048): the importance of key ``j`` is the total attention
it received from every prompt query, taken from the eager attention matrix."""

from __future__ import annotations

import torch

from trillium.kvcompress.scoring.window import gqa_mean

__all__ = ["accumulated_attention"]


def accumulated_attention(attention_weights: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """Column sums of the full causal attention.

    Args:
        attention_weights: ``[B, H_q, L, L]`` softmax probabilities (eager attention).
        num_kv_heads: KV heads; scores are averaged over each GQA group.

    Returns:
        ``[B, H_kv, L]`` float32 scores, higher = keep.
    """
    if attention_weights.ndim != 4 or attention_weights.shape[-1] != attention_weights.shape[-2]:
        raise ValueError(f"attention_weights must be [B, H, L, L], got {tuple(attention_weights.shape)}")
    return gqa_mean(attention_weights.float().sum(dim=2), num_kv_heads)
