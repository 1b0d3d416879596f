"""Compaction of kept tokens into a flattened ragged (per-KV-head) cache.

Head-wise budgets (AdaKV, arXiv 2407.11550; MadaKV's MPA, 2506.15724) keep a different number of tokens
per KV head. Memory only shrinks if the kept rows are packed without padding: segment ``s`` (``s = h`` for
``[H_kv, L, D]`` input, ``s = b * H_kv + h`` for ``[B, H_kv, L, D]``) owns rows
``offsets[s]:offsets[s + 1]`` of ``[total, D]`` - the layout AdaKV's varlen kernel reads and that
:mod:`trillium.kvcompress.ops.varlen` calls ``cu_seqlens``.

- :func:`gather_kept_reference` - a Python loop over segments with ``index_select`` (obvious);
- :func:`gather_kept_torch` - one ``index_select`` over flattened rows (the CPU path);
- :func:`gather_kept_triton` - one program per ``BLOCK_ROWS`` output rows copying keys and values;
- :func:`gather_kept_tokens` - Triton on CUDA tensors, torch otherwise;
- :func:`kept_indices_from_mask` - ragged index lists from a ``bool[S, L]`` keep mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trillium.kvcompress.kernels._triton import next_power_of_two, require_triton, tl, triton, use_triton_for

__all__ = [
    "gather_kept_reference",
    "gather_kept_tokens",
    "gather_kept_torch",
    "gather_kept_triton",
    "kept_indices_from_mask",
]

Packed = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def kept_indices_from_mask(keep_mask: torch.Tensor) -> list[torch.Tensor]:
    """``bool[..., L]`` keep mask -> ascending ``int64`` kept positions per segment (leading dims merged)."""
    if keep_mask.dtype != torch.bool or keep_mask.dim() < 2:
        raise ValueError("keep_mask must be a bool tensor [S, L] or [B, H_kv, L]")
    flat = keep_mask.reshape(-1, keep_mask.shape[-1])
    return [torch.nonzero(row).flatten() for row in flat]


def _segments(
    keys: torch.Tensor, values: torch.Tensor, kept_indices: Sequence[torch.Tensor]
) -> tuple[int, int]:
    if keys.dim() not in (3, 4) or values.shape[:-1] != keys.shape[:-1]:
        raise ValueError("keys/values must be [H_kv, L, D] or [B, H_kv, L, D] with matching leading dims")
    num_segments = keys.shape[:-2].numel()
    length = keys.shape[-2]
    if len(kept_indices) != num_segments:
        raise ValueError(
            f"kept_indices must have one tensor per segment ({num_segments}), got {len(kept_indices)}"
        )
    for seg, idx in enumerate(kept_indices):
        if idx.dim() != 1:
            raise ValueError(f"kept_indices[{seg}] must be 1-D")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= length):
            raise ValueError(f"kept_indices[{seg}] has positions outside [0, {length})")
    return num_segments, length


def _offsets(kept_indices: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    lengths = torch.tensor([idx.numel() for idx in kept_indices], dtype=torch.int64, device=device)
    return torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])


def _source_rows(kept_indices: Sequence[torch.Tensor], length: int, device: torch.device) -> torch.Tensor:
    """Row of each kept token in the ``[S * L, D]`` view of the input."""
    if not kept_indices:
        return torch.zeros(0, dtype=torch.int64, device=device)
    parts = [idx.to(device).long() + seg * length for seg, idx in enumerate(kept_indices)]
    return torch.cat(parts)


def gather_kept_reference(
    keys: torch.Tensor, values: torch.Tensor, kept_indices: Sequence[torch.Tensor]
) -> Packed:
    """Obvious version.

    Args:
        keys: ``[H_kv, L, D]`` or ``[B, H_kv, L, D]``.
        values: same leading dims, ``[..., L, D_v]``.
        kept_indices: one ``int`` tensor of kept positions per segment (``H_kv`` or ``B * H_kv``).

    Returns:
        ``keys_flat [total, D]``, ``values_flat [total, D_v]``, ``offsets int64[S + 1]``.
    """
    _segments(keys, values, kept_indices)
    flat_keys = keys.reshape(-1, *keys.shape[-2:])
    flat_values = values.reshape(-1, *values.shape[-2:])
    out_k = [flat_keys[seg].index_select(0, idx.long()) for seg, idx in enumerate(kept_indices)]
    out_v = [flat_values[seg].index_select(0, idx.long()) for seg, idx in enumerate(kept_indices)]
    return torch.cat(out_k), torch.cat(out_v), _offsets(kept_indices, keys.device)


def gather_kept_torch(
    keys: torch.Tensor, values: torch.Tensor, kept_indices: Sequence[torch.Tensor]
) -> Packed:
    """One ``index_select`` over the flattened rows; same contract as :func:`gather_kept_reference`."""
    _, length = _segments(keys, values, kept_indices)
    rows = _source_rows(kept_indices, length, keys.device)
    flat_keys = keys.reshape(-1, keys.shape[-1])
    flat_values = values.reshape(-1, values.shape[-1])
    return (
        flat_keys.index_select(0, rows),
        flat_values.index_select(0, rows),
        _offsets(kept_indices, keys.device),
    )


if triton is not None:

    @triton.jit
    def _gather_rows_kernel(  # noqa: PLR0917 (Triton kernels take positional arguments)
        K,
        V,
        Rows,
        OutK,
        OutV,
        total,
        DIM_K: tl.constexpr,
        DIM_V: tl.constexpr,
        PAD_K: tl.constexpr,
        PAD_V: tl.constexpr,
        BLOCK_ROWS: tl.constexpr,
    ):
        out_rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        row_ok = out_rows < total
        src = tl.load(Rows + out_rows, mask=row_ok, other=0)
        cols_k = tl.arange(0, PAD_K)
        mask_k = row_ok[:, None] & (cols_k[None, :] < DIM_K)
        k = tl.load(K + src[:, None] * DIM_K + cols_k[None, :], mask=mask_k)
        tl.store(OutK + out_rows[:, None] * DIM_K + cols_k[None, :], k, mask=mask_k)
        cols_v = tl.arange(0, PAD_V)
        mask_v = row_ok[:, None] & (cols_v[None, :] < DIM_V)
        v = tl.load(V + src[:, None] * DIM_V + cols_v[None, :], mask=mask_v)
        tl.store(OutV + out_rows[:, None] * DIM_V + cols_v[None, :], v, mask=mask_v)


def gather_kept_triton(
    keys: torch.Tensor, values: torch.Tensor, kept_indices: Sequence[torch.Tensor], block_rows: int = 32
) -> Packed:
    """Triton launcher; grid ``ceil(total / block_rows)``. Same contract as :func:`gather_kept_reference`."""
    require_triton(keys)
    _, length = _segments(keys, values, kept_indices)
    rows = _source_rows(kept_indices, length, keys.device)
    keys, values = keys.contiguous(), values.contiguous()
    total = rows.numel()
    out_k = keys.new_empty(total, keys.shape[-1])
    out_v = values.new_empty(total, values.shape[-1])
    if total:
        _gather_rows_kernel[(triton.cdiv(total, block_rows),)](
            keys,
            values,
            rows,
            out_k,
            out_v,
            total,
            DIM_K=keys.shape[-1],
            DIM_V=values.shape[-1],
            PAD_K=next_power_of_two(keys.shape[-1], minimum=1),
            PAD_V=next_power_of_two(values.shape[-1], minimum=1),
            BLOCK_ROWS=block_rows,
        )
    return out_k, out_v, _offsets(kept_indices, keys.device)


def gather_kept_tokens(
    keys: torch.Tensor, values: torch.Tensor, kept_indices: Sequence[torch.Tensor]
) -> Packed:
    """Pack kept rows per segment into ``[total, D]`` + ``offsets``: Triton on CUDA, torch otherwise."""
    if use_triton_for(keys):
        return gather_kept_triton(keys, values, kept_indices)
    return gather_kept_torch(keys, values, kept_indices)
