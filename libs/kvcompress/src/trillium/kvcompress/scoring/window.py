"""Observation-window attention, recomputed after a FlashAttention/SDPA prefill.

SnapKV (arXiv 2404.14469), MadaKV's psi (2506.15724), FlowMM's I (2511.05534) and AccKV's
text->modality attention (2511.11106) are column sums of the attention of a few prompt queries:
``A^{l,h}(j) = sum_{i in P} softmax_j(q_i . k_j / sqrt(d))``. Under SDPA the attention matrix never
exists, so the queries of the rows in ``P`` are recomputed from the layer input: ``q_proj`` (+
``q_norm`` when the model has one, as Qwen3/Gemma3) + RoPE from the layer's position embeddings,
then multiplied with the cached post-RoPE keys under the causal mask. Cost ``O(|P| L H d)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "gqa_mean",
    "pool_scores",
    "recompute_queries",
    "rows_attention",
    "window_indices",
]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def recompute_queries(
    attention: nn.Module,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    rows: torch.Tensor,
) -> torch.Tensor:
    """Post-RoPE queries of selected prompt rows.

    Args:
        attention: the decoder layer's attention module (``q_proj``, ``head_dim``, optional ``q_norm``).
        hidden_states: ``[B, L, hidden]`` input of the attention module (after the input norm).
        position_embeddings: ``(cos, sin)``, each ``[B, L, D]`` (M-RoPE already merged per axis,
            as transformers 5 passes them to the layer).
        rows: ``[P]`` int64 row indices.

    Returns:
        ``[B, H_q, P, D]`` queries as the attention module computed them.
    """
    head_dim = attention.head_dim
    selected = hidden_states[:, rows]
    batch, n_rows, _ = selected.shape
    q = attention.q_proj(selected).view(batch, n_rows, -1, head_dim)
    if getattr(attention, "q_norm", None) is not None:
        q = attention.q_norm(q)
    q = q.transpose(1, 2)
    cos, sin = position_embeddings
    cos = cos[:, rows].unsqueeze(1).to(q.dtype)
    sin = sin[:, rows].unsqueeze(1).to(q.dtype)
    return q * cos + _rotate_half(q) * sin


def rows_attention(
    queries: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor, scale: float
) -> torch.Tensor:
    """Causal softmax attention of selected query rows over all prompt keys.

    Args:
        queries: ``[B, H_q, P, D]`` (from :func:`recompute_queries`).
        keys: ``[B, H_kv, L, D]`` cached post-RoPE keys.
        rows: ``[P]`` prompt index of each query (query ``rows[p]`` sees keys ``0..rows[p]``).
        scale: softmax scale.

    Returns:
        ``[B, H_q, P, L]`` float32 attention probabilities.
    """
    num_q_heads, num_kv_heads = queries.shape[1], keys.shape[1]
    k = keys.repeat_interleave(num_q_heads // num_kv_heads, dim=1) if num_q_heads != num_kv_heads else keys
    scores = torch.matmul(queries.float(), k.float().transpose(-1, -2)) * scale
    visible = torch.arange(keys.shape[2], device=keys.device).unsqueeze(0) <= rows.to(keys.device).unsqueeze(
        1
    )
    scores = scores.masked_fill(~visible, float("-inf"))
    return torch.softmax(scores, dim=-1)


def window_indices(length: int, window: int) -> torch.Tensor:
    """Indices ``[w]`` of the last ``min(window, length)`` prompt tokens."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return torch.arange(max(length - window, 0), length)


def gqa_mean(scores: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """Average per-query-head scores over each KV group: ``[B, H_q, ...] -> [B, H_kv, ...]``."""
    batch, num_q_heads = scores.shape[:2]
    return scores.view(batch, num_kv_heads, num_q_heads // num_kv_heads, *scores.shape[2:]).mean(dim=2)


def pool_scores(scores: torch.Tensor, kernel: int) -> torch.Tensor:
    """1-D average pooling along the last axis (SnapKV's clustering), same length, ``kernel`` odd."""
    if kernel <= 1:
        return scores
    if kernel % 2 == 0:
        raise ValueError(f"kernel must be odd, got {kernel}")
    shape = scores.shape
    flat = scores.reshape(-1, 1, shape[-1])
    pooled = F.avg_pool1d(flat, kernel_size=kernel, stride=1, padding=kernel // 2, count_include_pad=False)
    return pooled.view(shape)
