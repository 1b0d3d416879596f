"""Block-sparse causal prefill attention over a list of kept key blocks per query block.

This is the compute kernel behind ST-SpAttn (PureKV, arXiv 2510.25600) and follows the block-sparse
prefill idea of MMInference, XAttention and FlexPrefill: the sequence is cut into tiles of
``block_size`` tokens and every query tile attends only to the key tiles listed for it, with the
element-level causal mask applied on top. Which tiles are kept is decided elsewhere
(``trillium.kvcompress.sparse_prefill``); this module only computes attention for a given list.

The kept-block list uses the layout of ``torch.nn.attention.flex_attention.BlockMask``, decided per
KV head and shared by its GQA query group:

- ``kv_num_blocks: int32[B, H_kv, NQ]`` - how many key tiles query tile ``i`` keeps,
- ``kv_indices: int32[B, H_kv, NQ, NK]`` - their tile ids, ascending, the first ``kv_num_blocks`` valid.

Element semantics (all three paths): query ``i`` attends key ``j`` iff ``j // block_size`` is kept for
``i // block_size`` and ``j <= i``.

Three implementations with the same semantics:

- :func:`block_sparse_attention_reference` - dense SDPA with the expanded element mask (slow, obvious);
- :func:`block_sparse_attention_torch` - real block-sparse compute on CPU: per query tile, gather the
  kept key tiles and run one SDPA over them, the query heads of a GQA group stacked along the query
  axis so every key tile is loaded once per group;
- :func:`block_sparse_attention_triton` - a flash-attention style Triton kernel that loops only over
  the kept tiles (online softmax, fp32 accumulation).

:func:`block_sparse_attention` dispatches: Triton on CUDA tensors, the torch path otherwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trillium.kvcompress.kernels._triton import next_power_of_two, require_triton, tl, triton, use_triton_for

__all__ = [
    "block_sparse_attention",
    "block_sparse_attention_reference",
    "block_sparse_attention_torch",
    "block_sparse_attention_triton",
    "expand_block_mask",
]


def _check_inputs(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    kv_num_blocks: torch.Tensor,
    kv_indices: torch.Tensor,
    *,
    block_size: int,
) -> tuple[int, int, int, int, int, int]:
    if query.dim() != 4 or keys.dim() != 4 or values.dim() != 4:
        raise ValueError("query, keys and values must be [B, H, L, D] tensors")
    batch, heads_q, length, dim = query.shape
    if keys.shape != values.shape or keys.shape[0] != batch or keys.shape[2:] != (length, dim):
        raise ValueError(f"keys/values shape {tuple(keys.shape)} does not match query {tuple(query.shape)}")
    heads_kv = keys.shape[1]
    if heads_q % heads_kv != 0:
        raise ValueError(f"query heads ({heads_q}) must be a multiple of key heads ({heads_kv})")
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    num_blocks = math.ceil(length / block_size)
    if kv_num_blocks.shape != (batch, heads_kv, num_blocks):
        raise ValueError(
            f"kv_num_blocks must be [B, H_kv, NQ] = {(batch, heads_kv, num_blocks)}, "
            f"got {tuple(kv_num_blocks.shape)}"
        )
    if kv_indices.dim() != 4 or kv_indices.shape[:3] != (batch, heads_kv, num_blocks):
        raise ValueError(f"kv_indices must be [B, H_kv, NQ, NK], got {tuple(kv_indices.shape)}")
    return batch, heads_q, heads_kv, length, dim, num_blocks


def expand_block_mask(
    kv_num_blocks: torch.Tensor, kv_indices: torch.Tensor, block_size: int, seq_len: int
) -> torch.Tensor:
    """Element-level mask of a kept-block list, causal included.

    Args:
        kv_num_blocks: ``int[B, H_kv, NQ]``.
        kv_indices: ``int[B, H_kv, NQ, NK]``.
        block_size: tokens per tile.
        seq_len: ``L``.

    Returns:
        ``bool[B, H_kv, L, L]``, True where query row attends key column.
    """
    block_kept = _kept_tiles(kv_num_blocks, kv_indices, math.ceil(seq_len / block_size))
    token_block = torch.arange(seq_len, device=kv_indices.device) // block_size
    element = block_kept[:, :, token_block][:, :, :, token_block]
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=kv_indices.device).tril()
    return element & causal


def block_sparse_attention_reference(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    kv_num_blocks: torch.Tensor,
    kv_indices: torch.Tensor,
    *,
    block_size: int,
    scaling: float | None = None,
) -> torch.Tensor:
    """Slow reference: dense attention with the element mask expanded from the block list.

    Shapes: ``query [B, H_q, L, D]``, ``keys/values [B, H_kv, L, D]`` -> ``[B, H_q, L, D]``.
    Computed in fp32 and cast back to the query dtype.
    """
    _, heads_q, heads_kv, length, _, _ = _check_inputs(
        query, keys, values, kv_num_blocks, kv_indices, block_size=block_size
    )
    group = heads_q // heads_kv
    mask = expand_block_mask(kv_num_blocks, kv_indices, block_size, length).repeat_interleave(group, dim=1)
    keys_q = keys.float().repeat_interleave(group, dim=1)
    values_q = values.float().repeat_interleave(group, dim=1)
    out = F.scaled_dot_product_attention(query.float(), keys_q, values_q, attn_mask=mask, scale=scaling)
    return out.to(query.dtype)


def _tile(tensor: torch.Tensor, num_blocks: int, block_size: int) -> torch.Tensor:
    """``[B, H, L, D]`` -> ``[B, H, NB, block_size, D]``, zero padded at the tail."""
    pad = num_blocks * block_size - tensor.shape[2]
    padded = F.pad(tensor, (0, 0, 0, pad)) if pad else tensor
    return padded.view(*tensor.shape[:2], num_blocks, block_size, tensor.shape[-1])


def _kept_tiles(kv_num_blocks: torch.Tensor, kv_indices: torch.Tensor, num_blocks: int) -> torch.Tensor:
    """Block list -> ``bool[B, H_kv, NQ, NK]`` kept tile pairs."""
    slots = torch.arange(kv_indices.shape[-1], device=kv_indices.device)
    valid = slots < kv_num_blocks[..., None]
    kept = torch.zeros(*kv_num_blocks.shape, num_blocks + 1, dtype=torch.bool, device=kv_indices.device)
    kept.scatter_(-1, torch.where(valid, kv_indices.long().clamp(0, num_blocks - 1), num_blocks), True)
    return kept[..., :num_blocks]


def block_sparse_attention_torch(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    kv_num_blocks: torch.Tensor,
    kv_indices: torch.Tensor,
    *,
    block_size: int,
    scaling: float | None = None,
    chunk_bytes: int = 16 << 20,
) -> torch.Tensor:
    """Block-sparse attention on CPU (or any device) with torch ops only.

    Every (batch, KV head, query tile) is an item that keeps ``n`` key tiles. Items with the same ``n``
    are batched: their key/value tiles are gathered into ``[items, n * block_size, D]`` (a reused
    workspace of about ``chunk_bytes``) and one SDPA call runs over the batch, masked only where a key
    can follow a query row (the diagonal tile). This keeps the number of SDPA calls and of Python
    steps small: one per distinct ``n`` and workspace fill, instead of one per query tile. The ``G``
    query heads of a KV group are stacked along the query axis, so key tiles are never repeated per
    query head. A query tile that keeps no key tile gets zeros. Shapes as in
    :func:`block_sparse_attention_reference`.
    """
    batch, heads_q, heads_kv, length, dim, num_blocks = _check_inputs(
        query, keys, values, kv_num_blocks, kv_indices, block_size=block_size
    )
    group = heads_q // heads_kv
    device = query.device
    dim_v = values.shape[-1]
    key_tiles = _tile(keys, num_blocks, block_size).reshape(-1, block_size, dim)
    value_tiles = _tile(values, num_blocks, block_size).reshape(-1, block_size, dim_v)
    query_items = (
        _tile(query, num_blocks, block_size)
        .view(batch, heads_kv, group, num_blocks, block_size, dim)
        .transpose(2, 3)
        .reshape(-1, group * block_size, dim)
    )
    out = query_items.new_zeros(query_items.shape[0], group * block_size, dim_v)
    counts = kv_num_blocks.reshape(-1).long()
    indices = kv_indices.reshape(counts.numel(), -1).long()
    segment = torch.arange(batch * heads_kv, device=device).repeat_interleave(num_blocks)
    query_tile = torch.arange(num_blocks, device=device).repeat(batch * heads_kv)
    row_pos = torch.arange(block_size, device=device).repeat(group)
    # one reusable gather workspace: fresh multi-MB allocations per chunk cost more than the copies
    tile_bytes = block_size * (dim + dim_v) * query.element_size()
    capacity = max(chunk_bytes // tile_bytes, int(counts.max()) if counts.numel() else 1)
    key_buffer = key_tiles.new_empty(capacity, block_size, dim)
    value_buffer = value_tiles.new_empty(capacity, block_size, dim_v)
    for count in torch.unique(counts).tolist():
        if count == 0:
            continue
        for items in torch.nonzero(counts == count).flatten().split(capacity // count):
            chosen = indices[items, :count].clamp(0, num_blocks - 1)
            flat = (segment[items, None] * num_blocks + chosen).flatten()
            key_sel = torch.index_select(key_tiles, 0, flat, out=key_buffer[: flat.numel()])
            value_sel = torch.index_select(value_tiles, 0, flat, out=value_buffer[: flat.numel()])
            mask = _causal_tile_mask(chosen, query_tile[items], row_pos, block_size, query.dtype)
            item_out = F.scaled_dot_product_attention(
                query_items[items, None],
                key_sel.view(-1, 1, count * block_size, dim),
                value_sel.view(-1, 1, count * block_size, dim_v),
                attn_mask=mask,
                scale=scaling,
            )
            out[items] = item_out[:, 0]
    out = out.view(batch, heads_kv, num_blocks, group, block_size, dim_v).transpose(2, 3)
    return out.reshape(batch, heads_q, num_blocks * block_size, dim_v)[:, :, :length]


def _causal_tile_mask(
    chosen: torch.Tensor, query_tile: torch.Tensor, row_pos: torch.Tensor, block_size: int, dtype: torch.dtype
) -> torch.Tensor:
    """Additive causal mask for items keeping tiles ``chosen [items, n]`` (ascending).

    When every item keeps its own (diagonal) tile last and only earlier tiles before it - the shape of
    every ST-SpAttn plan - the mask is the same for all items and is returned as one broadcast
    ``[1, 1, G * block_size, n * block_size]`` tensor (zeros, causal triangle in the last tile).
    Otherwise a per-item mask ``[items, 1, ...]`` is built. Keys past the sequence end sit in the last
    tile after every real query row, so the causal part hides them too.
    """
    items, count = chosen.shape
    in_tile = torch.arange(block_size, device=chosen.device)
    diagonal_last = bool((chosen[:, -1] == query_tile).all() and (chosen[:, :-1] < query_tile[:, None]).all())
    if diagonal_last:
        mask = torch.zeros(1, 1, row_pos.numel(), count * block_size, dtype=dtype, device=chosen.device)
        mask[..., -block_size:].masked_fill_(in_tile[None, :] > row_pos[:, None], -math.inf)
        return mask
    key_pos = (chosen[:, :, None] * block_size + in_tile).reshape(items, 1, 1, -1)
    query_pos = (query_tile[:, None] * block_size + row_pos).view(items, 1, -1, 1)
    mask = torch.zeros(items, 1, row_pos.numel(), count * block_size, dtype=dtype, device=chosen.device)
    return mask.masked_fill_(key_pos > query_pos, -math.inf)


if triton is not None:

    @triton.jit
    def _block_sparse_attention_kernel(  # noqa: PLR0917 (Triton kernels take positional arguments)
        Q,
        K,
        V,
        Out,
        NumBlocks,
        Indices,
        stride_qb,
        stride_qh,
        stride_ql,
        stride_kb,
        stride_kh,
        stride_kl,
        stride_vb,
        stride_vh,
        stride_vl,
        stride_ob,
        stride_oh,
        stride_ol,
        stride_nb,
        stride_nh,
        stride_nq,
        stride_ib,
        stride_ih,
        stride_iq,
        seq_len,
        scale,
        HEADS_Q: tl.constexpr,
        GROUP: tl.constexpr,
        HEAD_DIM: tl.constexpr,
        BLOCK: tl.constexpr,
        DIM_PAD: tl.constexpr,
    ):
        q_block = tl.program_id(0)
        batch_head = tl.program_id(1)
        b = batch_head // HEADS_Q
        h = batch_head % HEADS_Q
        h_kv = h // GROUP
        rows = q_block * BLOCK + tl.arange(0, BLOCK)
        cols_d = tl.arange(0, DIM_PAD)
        d_ok = cols_d[None, :] < HEAD_DIM
        q_ptrs = Q + b * stride_qb + h * stride_qh + rows[:, None] * stride_ql + cols_d[None, :]
        q = tl.load(q_ptrs, mask=(rows[:, None] < seq_len) & d_ok, other=0.0).to(tl.float32)
        m_i = tl.full([BLOCK], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK], tl.float32)
        acc = tl.zeros([BLOCK, DIM_PAD], tl.float32)
        count = tl.load(NumBlocks + b * stride_nb + h_kv * stride_nh + q_block * stride_nq)
        index_base = Indices + b * stride_ib + h_kv * stride_ih + q_block * stride_iq
        for slot in range(0, count):
            k_block = tl.load(index_base + slot)
            cols = k_block * BLOCK + tl.arange(0, BLOCK)
            col_ok = cols < seq_len
            k_ptrs = K + b * stride_kb + h_kv * stride_kh + cols[:, None] * stride_kl + cols_d[None, :]
            v_ptrs = V + b * stride_vb + h_kv * stride_vh + cols[:, None] * stride_vl + cols_d[None, :]
            k = tl.load(k_ptrs, mask=col_ok[:, None] & d_ok, other=0.0).to(tl.float32)
            v = tl.load(v_ptrs, mask=col_ok[:, None] & d_ok, other=0.0).to(tl.float32)
            scores = tl.dot(q, tl.trans(k)) * scale
            visible = (cols[None, :] <= rows[:, None]) & col_ok[None, :]
            scores = tl.where(visible, scores, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(scores, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m_i - m_safe)
            p = tl.exp(scores - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p, v)
            m_i = m_new
        l_safe = tl.where(l_i > 0.0, l_i, 1.0)
        acc = acc / l_safe[:, None]
        o_ptrs = Out + b * stride_ob + h * stride_oh + rows[:, None] * stride_ol + cols_d[None, :]
        tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=(rows[:, None] < seq_len) & d_ok)


def block_sparse_attention_triton(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    kv_num_blocks: torch.Tensor,
    kv_indices: torch.Tensor,
    *,
    block_size: int,
    scaling: float | None = None,
) -> torch.Tensor:
    """Launch the Triton kernel: one program per (query tile, batch x query head).

    ``block_size`` must be a power of two >= 16 (``tl.dot`` tile constraint). Shapes as in
    :func:`block_sparse_attention_reference`; accumulation is fp32, output in the query dtype.
    """
    require_triton(query)
    batch, heads_q, heads_kv, length, dim, num_blocks = _check_inputs(
        query, keys, values, kv_num_blocks, kv_indices, block_size=block_size
    )
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two >= 16 for the Triton kernel, got {block_size}")
    query, keys, values = (t.contiguous() for t in (query, keys, values))
    counts = kv_num_blocks.to(torch.int32).contiguous()
    indices = kv_indices.to(torch.int32).contiguous()
    out = torch.empty_like(query)
    scale = scaling if scaling is not None else 1.0 / math.sqrt(dim)
    grid = (num_blocks, batch * heads_q)
    _block_sparse_attention_kernel[grid](
        query,
        keys,
        values,
        out,
        counts,
        indices,
        *query.stride()[:3],
        *keys.stride()[:3],
        *values.stride()[:3],
        *out.stride()[:3],
        *counts.stride(),
        *indices.stride()[:3],
        length,
        scale,
        HEADS_Q=heads_q,
        GROUP=heads_q // heads_kv,
        HEAD_DIM=dim,
        BLOCK=block_size,
        DIM_PAD=next_power_of_two(dim),
    )
    return out


def block_sparse_attention(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    kv_num_blocks: torch.Tensor,
    kv_indices: torch.Tensor,
    *,
    block_size: int,
    scaling: float | None = None,
) -> torch.Tensor:
    """Block-sparse causal attention: Triton on CUDA tensors, the torch gather path elsewhere.

    Shapes: ``query [B, H_q, L, D]``, ``keys/values [B, H_kv, L, D]``, ``kv_num_blocks [B, H_kv, NQ]``,
    ``kv_indices [B, H_kv, NQ, NK]`` -> ``[B, H_q, L, D]``.
    """
    if use_triton_for(query) and block_size >= 16 and not block_size & (block_size - 1):
        return block_sparse_attention_triton(
            query, keys, values, kv_num_blocks, kv_indices, block_size=block_size, scaling=scaling
        )
    return block_sparse_attention_torch(
        query, keys, values, kv_num_blocks, kv_indices, block_size=block_size, scaling=scaling
    )
