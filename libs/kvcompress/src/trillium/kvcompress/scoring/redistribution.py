"""AccKV attention redistribution (arXiv 2511.11106).

Accumulated (H2O-style) scores favour early tokens: key ``j`` is seen by ``l - j`` queries, and query
``i`` spreads its unit mass over ``i + 1`` keys. AccKV reweights entry ``(i, j)`` of the causal
attention matrix by ``(i + 1) / (l - j)`` before summing the columns (formula as summarised by a
secondary source; the PDF was not checked).

Modes: ``full`` uses every prompt query (queries recomputed in row chunks: ``O(L^2)`` compute,
``O(chunk * L)`` memory); ``window`` uses only the last ``w`` queries and replaces ``l - j`` by the
number of window queries that see ``j`` (our design choice — the paper does not specify).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from trillium.kvcompress.scoring.window import gqa_mean, recompute_queries, rows_attention

__all__ = [
    "redistributed_scores_from_matrix",
    "redistributed_scores_from_queries",
    "redistributed_scores_full",
    "redistributed_scores_window",
]


def redistributed_scores_from_matrix(attention_weights: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """Reference: ``[B, H_q, L, L]`` causal attention -> ``[B, H_kv, L]`` redistributed column sums."""
    length = attention_weights.shape[-1]
    i = torch.arange(length, dtype=torch.float32)
    weight = (i + 1).unsqueeze(1) / (length - i).unsqueeze(0)
    return gqa_mean((attention_weights.float() * weight).sum(dim=2), num_kv_heads)


def redistributed_scores_full(
    attention: nn.Module,
    hidden_states: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    keys: torch.Tensor,
    *,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Exact redistributed scores from recomputed queries, in row chunks.

    Args:
        attention: the layer's attention module.
        hidden_states: ``[B, L, hidden]`` attention input.
        position_embeddings: ``(cos, sin)`` ``[B, L, D]``.
        keys: ``[B, H_kv, L, D]`` cached keys.
        chunk_size: query rows per chunk.

    Returns:
        ``[B, H_kv, L]`` float32.
    """

    def queries_of(rows: torch.Tensor) -> torch.Tensor:
        return recompute_queries(attention, hidden_states, position_embeddings, rows)

    return redistributed_scores_from_queries(queries_of, keys, attention.scaling, chunk_size=chunk_size)


def redistributed_scores_from_queries(
    queries_of: Callable[[torch.Tensor], torch.Tensor],
    keys: torch.Tensor,
    scale: float,
    *,
    chunk_size: int = 256,
) -> torch.Tensor:
    """:func:`redistributed_scores_full` with the queries from ``queries_of(rows) -> [B, H_q, P, D]``
    (recomputed, or kept by a chunked prefill); ``keys`` ``[B, H_kv, L, D]`` -> ``[B, H_kv, L]``."""
    batch, num_kv_heads, length, _ = keys.shape
    total: torch.Tensor | None = None
    key_weight = 1.0 / (length - torch.arange(length, dtype=torch.float32))
    for start in range(0, length, chunk_size):
        rows = torch.arange(start, min(start + chunk_size, length))
        probs = rows_attention(queries_of(rows), keys, rows, scale)
        row_weight = (rows.float() + 1).view(1, 1, -1, 1)
        part = (probs * row_weight).sum(dim=2)
        total = part if total is None else total + part
    return gqa_mean(total * key_weight, num_kv_heads)


def redistributed_scores_window(probs: torch.Tensor, rows: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """Window mode: ``probs`` ``[B, H_q, P, L]`` of the query rows ``rows`` ``[P]``; weight
    ``(i + 1) / n_j`` with ``n_j`` the number of those rows that see key ``j``."""
    length = probs.shape[-1]
    sees = (torch.arange(length).unsqueeze(0) <= rows.unsqueeze(1)).float()
    n_seen = sees.sum(dim=0).clamp_min(1.0)
    row_weight = (rows.float() + 1).view(1, 1, -1, 1)
    return gqa_mean((probs.float() * row_weight).sum(dim=2) / n_seen, num_kv_heads)
