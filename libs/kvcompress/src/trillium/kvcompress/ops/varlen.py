"""Decode attention over a ragged (variable length per KV head) cache.

Storage (one layer, batch ``B``, ``H_kv`` KV heads): the kept keys of all ``S = B * H_kv`` segments
are packed row after row into ``keys: [N, D]`` / ``values: [N, D_v]``; segment ``s = b * H_kv + h``
owns rows ``cu_seqlens[s]:cu_seqlens[s + 1]``. No padding is stored.

Queries are grouped per KV head (``H_q = H_kv * G``): the ``G * Q`` query rows of a group attend to
their KV head's segment with one matrix product, so keys and values are never repeated across
the group (the usual GQA ``repeat_kv`` copy is avoided at every decode step).

The functions return the attention output **and** its log-sum-exp so that a second attention over
another block of keys (e.g. the freshly decoded tokens) can be merged exactly with
:func:`merge_attention_states`.

A Triton implementation of :func:`varlen_decode_attention` must keep this signature.
"""

from __future__ import annotations

import torch

__all__ = [
    "grouped_attention",
    "merge_attention_states",
    "varlen_decode_attention",
    "varlen_decode_attention_reference",
]


def _check_query(query: torch.Tensor, num_segments: int) -> tuple[int, int, int, int, int]:
    if query.ndim != 4:
        raise ValueError(f"query must be [B, H_q, Q, D], got shape {tuple(query.shape)}")
    batch, num_q_heads, q_len, dim = query.shape
    if num_segments % batch:
        raise ValueError(f"cu_seqlens describes {num_segments} segments, not a multiple of batch {batch}")
    num_kv_heads = num_segments // batch
    if num_q_heads % num_kv_heads:
        raise ValueError(f"query has {num_q_heads} heads, not a multiple of {num_kv_heads} KV heads")
    return batch, num_q_heads, q_len, dim, num_kv_heads


def _softmax_with_lse(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    lse = torch.logsumexp(scores, dim=-1)
    probs = torch.exp(scores - lse.unsqueeze(-1).clamp_min(torch.finfo(scores.dtype).min))
    return probs, lse


def varlen_decode_attention(  # noqa: PLR0917 (stable positional signature shared with the Triton kernel)
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of new queries over a packed ragged cache (every cached key is visible).

    Args:
        query: ``[B, H_q, Q, D]`` queries (post-RoPE), ``H_q = H_kv * G``.
        keys: ``[N, D]`` packed keys, ``N = cu_seqlens[-1]``.
        values: ``[N, D_v]`` packed values.
        cu_seqlens: ``[B * H_kv + 1]`` int64 prefix sums of the segment lengths (segment
            ``b * H_kv + h``). A segment may be empty.
        max_seqlen: the longest segment length (``N == S * max_seqlen`` means all are equal).
        scale: softmax scale (usually ``D ** -0.5``).

    Returns:
        ``out``: ``[B, H_q, Q, D_v]`` in the query dtype; ``lse``: ``[B, H_q, Q]`` float32
        log-sum-exp of the scaled scores (``-inf`` for an empty segment, whose output is 0).
    """
    num_segments = cu_seqlens.numel() - 1
    batch, num_q_heads, q_len, _, num_kv_heads = _check_query(query, num_segments)
    group = num_q_heads // num_kv_heads
    grouped_q = query.reshape(batch, num_kv_heads, group * q_len, -1)
    total = keys.shape[0]
    if total == num_segments * max_seqlen:
        k = keys.view(batch, num_kv_heads, max_seqlen, -1)
        v = values.view(batch, num_kv_heads, max_seqlen, -1)
        out, lse = _dense_attention(grouped_q, k, v, scale)
    else:
        out = query.new_zeros(batch, num_kv_heads, group * q_len, values.shape[-1])
        lse = torch.full((batch, num_kv_heads, group * q_len), float("-inf"), dtype=torch.float32)
        bounds = cu_seqlens.tolist()
        for seg in range(num_segments):
            start, end = bounds[seg], bounds[seg + 1]
            if end == start:
                continue
            b, h = divmod(seg, num_kv_heads)
            o, l = _dense_attention(grouped_q[b, h], keys[start:end], values[start:end], scale)
            out[b, h], lse[b, h] = o, l
    out = out.view(batch, num_q_heads, q_len, -1)
    return out, lse.view(batch, num_q_heads, q_len)


def _dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``q: [..., M, D]``, ``k: [..., N, D]``, ``v: [..., N, D_v]`` -> ``([..., M, D_v], lse [..., M])``."""
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs, lse = _softmax_with_lse(scores)
    out = torch.matmul(probs.to(v.dtype), v)
    return out.to(q.dtype), lse


def grouped_attention(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float, *, causal: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of ``Q`` new queries over a dense block of keys that ends with those queries.

    Args:
        query: ``[B, H_q, Q, D]``.
        keys: ``[B, H_kv, T, D]`` with ``T >= Q``; the last ``Q`` keys belong to the queries.
        values: ``[B, H_kv, T, D_v]``.
        scale: softmax scale.
        causal: query ``i`` sees keys ``0 .. T - Q + i`` only.

    Returns:
        ``out`` ``[B, H_q, Q, D_v]`` and ``lse`` ``[B, H_q, Q]`` (float32).
    """
    batch, num_q_heads, q_len, _ = query.shape
    num_kv_heads, length = keys.shape[1], keys.shape[2]
    group = num_q_heads // num_kv_heads
    grouped_q = query.reshape(batch, num_kv_heads, group * q_len, -1)
    mask = None
    if causal and q_len > 1:
        key_pos = torch.arange(length, device=query.device)
        query_pos = torch.arange(length - q_len, length, device=query.device).repeat(group)
        mask = key_pos.unsqueeze(0) <= query_pos.unsqueeze(1)
    out, lse = _dense_attention(grouped_q, keys, values, scale, mask)
    return out.view(batch, num_q_heads, q_len, -1), lse.view(batch, num_q_heads, q_len)


def merge_attention_states(
    out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor
) -> torch.Tensor:
    """Combine two partial attentions over disjoint key sets into the attention over their union.

    ``out_*``: ``[..., D_v]``; ``lse_*``: ``[...]`` (``-inf`` = empty key set).
    """
    lse = torch.logaddexp(lse_a, lse_b)
    safe = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    w_a = torch.exp(lse_a - safe).unsqueeze(-1)
    w_b = torch.exp(lse_b - safe).unsqueeze(-1)
    return (out_a.float() * w_a + out_b.float() * w_b).to(out_a.dtype)


def varlen_decode_attention_reference(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    cu_seqlens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Slow, obvious reference of :func:`varlen_decode_attention` (output only): one loop per
    batch row and query head, softmax over that head's KV segment. Shapes as there."""
    batch, num_q_heads, q_len, _ = query.shape
    num_kv_heads = (cu_seqlens.numel() - 1) // batch
    group = num_q_heads // num_kv_heads
    out = torch.zeros(batch, num_q_heads, q_len, values.shape[-1], dtype=torch.float64)
    for b in range(batch):
        for hq in range(num_q_heads):
            seg = b * num_kv_heads + hq // group
            start, end = int(cu_seqlens[seg]), int(cu_seqlens[seg + 1])
            if end == start:
                continue
            k = keys[start:end].double()
            v = values[start:end].double()
            probs = torch.softmax(query[b, hq].double() @ k.T * scale, dim=-1)
            out[b, hq] = probs @ v
    return out.to(query.dtype)
