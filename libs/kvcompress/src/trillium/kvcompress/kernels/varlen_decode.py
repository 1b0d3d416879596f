"""Decode attention over a flattened ragged per-KV-head cache (Triton kernel).

Head-wise budgets (AdaKV, arXiv 2407.11550; MadaKV, 2506.15724) leave a different number of kept tokens
per KV head; packed without padding (see :mod:`trillium.kvcompress.kernels.gather_kept`), segment
``s = b * H_kv + h`` owns rows ``cu_seqlens[s]:cu_seqlens[s + 1]`` of ``keys [N, D]``. A few new queries
per query head attend to their KV head's segment; all cached keys are visible.

The torch implementation and its slow reference live in :mod:`trillium.kvcompress.ops.varlen`; this
module adds the Triton kernel with the same signature and results (output and float32 log-sum-exp,
0 and ``-inf`` for an empty segment) and :func:`varlen_decode_attention`, which dispatches Triton on
CUDA tensors and the torch version otherwise. One program per (batch, query head) streams its segment
in ``BLOCK_N`` rows with an online softmax; scores use a broadcast multiply-sum rather than ``tl.dot``
because decode has one to a few query rows (below ``tl.dot``'s 16-row minimum on GPUs).
"""

from __future__ import annotations

import torch

from trillium.kvcompress.kernels._triton import next_power_of_two, require_triton, tl, triton, use_triton_for
from trillium.kvcompress.ops.varlen import varlen_decode_attention as varlen_decode_attention_torch

__all__ = ["varlen_decode_attention", "varlen_decode_attention_torch", "varlen_decode_attention_triton"]


if triton is not None:

    @triton.jit
    def _varlen_decode_kernel(  # noqa: PLR0917 (Triton kernels take positional arguments)
        Q,
        K,
        V,
        CuSeqlens,
        Out,
        Lse,
        stride_qb,
        stride_qh,
        stride_qt,
        stride_ob,
        stride_oh,
        stride_ot,
        stride_lb,
        stride_lh,
        q_len,
        scale,
        HEADS_Q: tl.constexpr,
        HEADS_KV: tl.constexpr,
        DIM_K: tl.constexpr,
        DIM_V: tl.constexpr,
        Q_PAD: tl.constexpr,
        PAD_K: tl.constexpr,
        PAD_V: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        batch_head = tl.program_id(0)
        b = batch_head // HEADS_Q
        h = batch_head % HEADS_Q
        segment = b * HEADS_KV + h // (HEADS_Q // HEADS_KV)
        start = tl.load(CuSeqlens + segment)
        end = tl.load(CuSeqlens + segment + 1)
        t = tl.arange(0, Q_PAD)
        t_ok = t < q_len
        ck = tl.arange(0, PAD_K)
        cv = tl.arange(0, PAD_V)
        q_ptrs = Q + b * stride_qb + h * stride_qh + t[:, None] * stride_qt + ck[None, :]
        q = tl.load(q_ptrs, mask=t_ok[:, None] & (ck[None, :] < DIM_K), other=0.0).to(tl.float32)
        m_i = tl.full([Q_PAD], float("-inf"), tl.float32)
        l_i = tl.zeros([Q_PAD], tl.float32)
        acc = tl.zeros([Q_PAD, PAD_V], tl.float32)
        for row0 in range(start, end, BLOCK_N):
            rows = row0 + tl.arange(0, BLOCK_N)
            rows_ok = rows < end
            k = tl.load(
                K + rows[:, None] * DIM_K + ck[None, :], mask=rows_ok[:, None] & (ck[None, :] < DIM_K)
            )
            v = tl.load(
                V + rows[:, None] * DIM_V + cv[None, :], mask=rows_ok[:, None] & (cv[None, :] < DIM_V)
            )
            s = tl.sum(q[:, None, :] * k.to(tl.float32)[None, :, :], axis=2) * scale
            s = tl.where(rows_ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m_i - m_safe)
            p = tl.exp(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v.to(tl.float32)[None, :, :], axis=1)
            m_i = m_new
        has_keys = l_i > 0.0
        out = acc / tl.where(has_keys, l_i, 1.0)[:, None]
        lse = tl.where(has_keys, m_i + tl.log(tl.where(has_keys, l_i, 1.0)), float("-inf"))
        o_ptrs = Out + b * stride_ob + h * stride_oh + t[:, None] * stride_ot + cv[None, :]
        tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=t_ok[:, None] & (cv[None, :] < DIM_V))
        tl.store(Lse + b * stride_lb + h * stride_lh + t, lse, mask=t_ok)


def varlen_decode_attention_triton(  # noqa: PLR0917 (signature of ops.varlen)
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    scale: float,
    block_n: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton version of :func:`trillium.kvcompress.ops.varlen.varlen_decode_attention`.

    Args:
        query: ``[B, H_q, Q, D]``, ``H_q = H_kv * G``.
        keys: ``[N, D]``; values ``[N, D_v]``; ``N = cu_seqlens[-1]``.
        cu_seqlens: ``int[B * H_kv + 1]`` segment prefix sums (empty segments allowed).
        max_seqlen: longest segment (kept for signature parity; the kernel reads the offsets).
        scale: softmax scale.

    Returns:
        ``out [B, H_q, Q, D_v]`` (query dtype) and ``lse float32[B, H_q, Q]``.
    """
    require_triton(query)
    if query.dim() != 4 or keys.dim() != 2 or values.dim() != 2:
        raise ValueError("query must be [B, H_q, Q, D]; keys and values must be [N, D]")
    batch, heads_q, q_len, dim = query.shape
    num_segments = cu_seqlens.numel() - 1
    if num_segments % batch or heads_q % (num_segments // batch):
        raise ValueError(f"cu_seqlens with {num_segments} segments does not fit query {tuple(query.shape)}")
    if max_seqlen < 0:
        raise ValueError(f"max_seqlen must be >= 0, got {max_seqlen}")
    heads_kv = num_segments // batch
    query = query.contiguous()
    keys, values = keys.contiguous(), values.contiguous()
    offsets = cu_seqlens.to(device=query.device, dtype=torch.int32).contiguous()
    out = query.new_empty(batch, heads_q, q_len, values.shape[-1])
    lse = torch.empty(batch, heads_q, q_len, dtype=torch.float32, device=query.device)
    _varlen_decode_kernel[(batch * heads_q,)](
        query,
        keys,
        values,
        offsets,
        out,
        lse,
        *query.stride()[:3],
        *out.stride()[:3],
        *lse.stride()[:2],
        q_len,
        scale,
        HEADS_Q=heads_q,
        HEADS_KV=heads_kv,
        DIM_K=dim,
        DIM_V=values.shape[-1],
        Q_PAD=next_power_of_two(q_len, minimum=1),
        PAD_K=next_power_of_two(dim, minimum=1),
        PAD_V=next_power_of_two(values.shape[-1], minimum=1),
        BLOCK_N=block_n,
    )
    return out, lse


def varlen_decode_attention(  # noqa: PLR0917 (signature of ops.varlen)
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged decode attention: Triton on CUDA tensors, the torch version of ``ops.varlen`` otherwise."""
    if use_triton_for(query):
        return varlen_decode_attention_triton(query, keys, values, cu_seqlens, max_seqlen, scale)
    return varlen_decode_attention_torch(query, keys, values, cu_seqlens, max_seqlen, scale)
