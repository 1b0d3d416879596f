"""Observation-window attention scores: ``A(j) = sum_{i in P} softmax_j(q_i . k_j * scale)``, GQA-averaged.

The score behind SnapKV (arXiv 2404.14469), MadaKV's psi (2506.15724), FlowMM's I (2511.05534), AccKV's
text->modality attention (2511.11106) and PureKV's lower-layer term (2510.25600): the attention of a few
recomputed prompt queries ``P`` (by default the last ``w`` rows) over all cached keys, causal (row ``p``
sees keys ``0..p``), summed over the rows and averaged over the query heads of each KV group (as
kvpress does). Under FlashAttention the attention matrix never exists, so a fused kernel computes the
column sums directly: pass 1 gets each row's softmax max and normaliser, pass 2 accumulates the
normalised probabilities per key tile; the ``[P, L]`` matrix is never stored.

- :func:`window_scores_reference` - torch, materialises ``[B, H_q, P, L]`` (the CPU path);
- :func:`window_scores_triton` - one program per (batch, KV head) and key chunk, looping over the group;
- :func:`window_scores` - Triton on CUDA tensors, torch otherwise.
"""

from __future__ import annotations

import math

import torch

from trillium.kvcompress.kernels._triton import next_power_of_two, require_triton, tl, triton, use_triton_for

__all__ = ["window_scores", "window_scores_reference", "window_scores_triton"]


def _check(queries: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    if queries.dim() != 4 or keys.dim() != 4:
        raise ValueError("queries must be [B, H_q, P, D] and keys [B, H_kv, L, D]")
    batch, heads_q, num_rows, dim = queries.shape
    if keys.shape[0] != batch or keys.shape[3] != dim or heads_q % keys.shape[1]:
        raise ValueError(
            f"keys shape {tuple(keys.shape)} is incompatible with queries {tuple(queries.shape)}"
        )
    length = keys.shape[2]
    if rows is None:
        if num_rows > length:
            raise ValueError(f"{num_rows} window queries but only {length} keys")
        return torch.arange(length - num_rows, length, device=keys.device)
    if rows.shape != (num_rows,):
        raise ValueError(f"rows must be int[{num_rows}], got shape {tuple(rows.shape)}")
    if bool(((rows < 0) | (rows >= length)).any()):
        raise ValueError("rows must index prompt positions in [0, L)")
    return rows.to(keys.device).long()


def window_scores_reference(
    queries: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor | None = None, scale: float | None = None
) -> torch.Tensor:
    """Obvious torch version.

    Args:
        queries: ``[B, H_q, P, D]`` post-RoPE queries of the observation rows.
        keys: ``[B, H_kv, L, D]`` cached post-RoPE keys.
        rows: ``int64[P]`` prompt position of each query; default the last ``P`` positions.
        scale: softmax scale, default ``1/sqrt(D)``.

    Returns:
        ``float32[B, H_kv, L]``.
    """
    rows = _check(queries, keys, rows)
    batch, heads_q, _, dim = queries.shape
    heads_kv, length = keys.shape[1], keys.shape[2]
    scale = scale if scale is not None else 1.0 / math.sqrt(dim)
    expanded = keys.float().repeat_interleave(heads_q // heads_kv, dim=1)
    logits = torch.matmul(queries.float(), expanded.transpose(-1, -2)) * scale
    visible = torch.arange(length, device=keys.device)[None, :] <= rows[:, None]
    probs = torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1)
    per_head = probs.sum(dim=2)
    return per_head.view(batch, heads_kv, heads_q // heads_kv, length).mean(dim=2)


if triton is not None:

    @triton.jit
    def _row_statistics(  # noqa: PLR0917 (Triton kernels take positional arguments)
        q,
        key_base,
        stride_kl,
        row_pos,
        row_ok,
        cols_d,
        d_ok,
        length,
        scale,
        ROWS_PAD: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        m_i = tl.full([ROWS_PAD], float("-inf"), tl.float32)
        l_i = tl.zeros([ROWS_PAD], tl.float32)
        for start in range(0, length, BLOCK_N):
            cols = start + tl.arange(0, BLOCK_N)
            k = tl.load(
                key_base + cols[:, None] * stride_kl + cols_d[None, :], mask=(cols[:, None] < length) & d_ok
            )
            s = tl.dot(q, tl.trans(k.to(tl.float32))) * scale
            visible = (cols[None, :] <= row_pos[:, None]) & (cols[None, :] < length) & row_ok[:, None]
            s = tl.where(visible, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            l_i = l_i * tl.exp(m_i - m_safe) + tl.sum(tl.exp(s - m_safe[:, None]), 1)
            m_i = m_new
        return m_i, l_i

    @triton.jit
    def _window_scores_kernel(  # noqa: PLR0917 (Triton kernels take positional arguments)
        Q,
        K,
        Rows,
        Out,
        stride_qb,
        stride_qh,
        stride_qp,
        stride_kb,
        stride_kh,
        stride_kl,
        stride_ob,
        stride_oh,
        num_rows,
        length,
        scale,
        HEADS_KV: tl.constexpr,
        GROUP: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        ROWS_PAD: tl.constexpr,
        DIM_PAD: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        batch_head = tl.program_id(0)
        chunk = tl.program_id(1)
        b = batch_head // HEADS_KV
        h_kv = batch_head % HEADS_KV
        ridx = tl.arange(0, ROWS_PAD)
        row_ok = ridx < num_rows
        row_pos = tl.load(Rows + ridx, mask=row_ok, other=0)
        cols_d = tl.arange(0, DIM_PAD)
        d_ok = cols_d[None, :] < HEAD_DIM
        key_base = K + b * stride_kb + h_kv * stride_kh
        cols = chunk * BLOCK_N + tl.arange(0, BLOCK_N)
        k_chunk = tl.load(
            key_base + cols[:, None] * stride_kl + cols_d[None, :], mask=(cols[:, None] < length) & d_ok
        )
        k_chunk = k_chunk.to(tl.float32)
        total = tl.zeros([BLOCK_N], tl.float32)
        for g in range(GROUP):
            h = h_kv * GROUP + g
            q_ptrs = Q + b * stride_qb + h * stride_qh + ridx[:, None] * stride_qp + cols_d[None, :]
            q = tl.load(q_ptrs, mask=row_ok[:, None] & d_ok, other=0.0).to(tl.float32)
            m_i, l_i = _row_statistics(
                q, key_base, stride_kl, row_pos, row_ok, cols_d, d_ok, length, scale, ROWS_PAD, BLOCK_N
            )
            s = tl.dot(q, tl.trans(k_chunk)) * scale
            visible = (cols[None, :] <= row_pos[:, None]) & (cols[None, :] < length) & row_ok[:, None]
            m_safe = tl.where(m_i == float("-inf"), 0.0, m_i)
            l_safe = tl.where(l_i > 0.0, l_i, 1.0)
            p = tl.where(visible, tl.exp(s - m_safe[:, None]) / l_safe[:, None], 0.0)
            total += tl.sum(p, 0)
        tl.store(Out + b * stride_ob + h_kv * stride_oh + cols, total / GROUP, mask=cols < length)


def window_scores_triton(
    queries: torch.Tensor,
    keys: torch.Tensor,
    rows: torch.Tensor | None = None,
    scale: float | None = None,
    block_n: int = 64,
) -> torch.Tensor:
    """Triton launcher; grid ``(B * H_kv, ceil(L / block_n))``. Shapes as in the reference.

    Every program recomputes the row statistics over all keys (pass 1) and then scores its own key
    chunk (pass 2): ``P`` is small (about 32), so the repeated pass 1 is cheap next to the parallelism.
    """
    require_triton(queries)
    rows = _check(queries, keys, rows)
    batch, heads_q, num_rows, dim = queries.shape
    heads_kv, length = keys.shape[1], keys.shape[2]
    queries, keys = queries.contiguous(), keys.contiguous()
    rows32 = rows.to(torch.int32).contiguous()
    out = torch.empty(batch, heads_kv, length, dtype=torch.float32, device=keys.device)
    grid = (batch * heads_kv, triton.cdiv(length, block_n))
    _window_scores_kernel[grid](
        queries,
        keys,
        rows32,
        out,
        *queries.stride()[:3],
        *keys.stride()[:3],
        *out.stride()[:2],
        num_rows,
        length,
        scale if scale is not None else 1.0 / math.sqrt(dim),
        HEADS_KV=heads_kv,
        GROUP=heads_q // heads_kv,
        HEAD_DIM=dim,
        ROWS_PAD=next_power_of_two(num_rows),
        DIM_PAD=next_power_of_two(dim),
        BLOCK_N=block_n,
    )
    return out


def window_scores(
    queries: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor | None = None, scale: float | None = None
) -> torch.Tensor:
    """Window attention scores ``float32[B, H_kv, L]``: Triton on CUDA tensors, torch otherwise."""
    if use_triton_for(queries):
        return window_scores_triton(queries, keys, rows, scale)
    return window_scores_reference(queries, keys, rows, scale)
