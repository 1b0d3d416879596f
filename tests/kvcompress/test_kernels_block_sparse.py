"""Block-sparse prefill attention: torch gather path and Triton kernel (interpreter) vs the dense reference.

Tolerances: fp32 atol 1e-5; fp16 inputs atol 2e-3 against the reference computed in fp32 from the same
fp16 inputs (fp16 output rounding is ~5e-4 for values of order 1).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trillium.kvcompress.kernels import block_sparse_attention, expand_block_mask
from trillium.kvcompress.kernels.block_sparse import (
    block_sparse_attention_reference,
    block_sparse_attention_torch,
    block_sparse_attention_triton,
)

TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3}


def random_block_lists(
    batch: int,
    heads_kv: int,
    seq_len: int,
    block_size: int,
    keep: float,
    *,
    seed: int = 0,
    diagonal: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random causal kept-tile lists that keep the diagonal tile (or, with ``diagonal=False``, tile 0)."""
    gen = torch.Generator().manual_seed(seed)
    num_blocks = math.ceil(seq_len / block_size)
    kept = torch.rand(batch, heads_kv, num_blocks, num_blocks, generator=gen) < keep
    if diagonal:
        kept |= torch.eye(num_blocks, dtype=torch.bool)
    else:
        kept[..., 0] = True
        kept[..., 1:, 1:].diagonal(dim1=-2, dim2=-1).fill_(False)
    kept &= torch.ones(num_blocks, num_blocks, dtype=torch.bool).tril()
    ids = torch.arange(num_blocks)
    indices = torch.where(kept, ids, num_blocks).sort(dim=-1).values.to(torch.int32)
    return kept.sum(-1, dtype=torch.int32), indices


def qkv(batch: int, heads_q: int, heads_kv: int, seq_len: int, dim: int, *, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, heads_q, seq_len, dim, generator=gen),
        torch.randn(batch, heads_kv, seq_len, dim, generator=gen),
        torch.randn(batch, heads_kv, seq_len, dim, generator=gen),
    )


@pytest.mark.parametrize(("seq_len", "block_size", "keep"), [(45, 16, 0.4), (64, 16, 0.0), (9, 16, 1.0)])
def test_torch_path_matches_reference(seq_len: int, block_size: int, keep: float) -> None:
    q, k, v = qkv(2, 4, 2, seq_len, 16)
    num, idx = random_block_lists(2, 2, seq_len, block_size, keep, seed=1)
    expected = block_sparse_attention_reference(q, k, v, num, idx, block_size=block_size)
    for chunk in (64 << 20, 1):
        got = block_sparse_attention_torch(q, k, v, num, idx, block_size=block_size, chunk_bytes=chunk)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("seq_len", "keep"), [(45, 0.4), (40, 0.0)])
def test_triton_kernel_matches_reference(dtype: torch.dtype, seq_len: int, keep: float) -> None:
    q, k, v = (t.to(dtype) for t in qkv(1, 4, 2, seq_len, 16, seed=2))
    num, idx = random_block_lists(1, 2, seq_len, 16, keep, seed=3)
    expected = block_sparse_attention_reference(q, k, v, num, idx, block_size=16).float()
    got = block_sparse_attention_triton(q, k, v, num, idx, block_size=16)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), expected, atol=TOLERANCE[dtype], rtol=0)


def test_lists_without_the_diagonal_tile() -> None:
    q, k, v = qkv(1, 2, 1, 50, 16, seed=8)
    num, idx = random_block_lists(1, 1, 50, 16, keep=0.5, seed=9, diagonal=False)
    expected = block_sparse_attention_reference(q, k, v, num, idx, block_size=16)
    assert torch.isfinite(expected).all()
    got_torch = block_sparse_attention_torch(q, k, v, num, idx, block_size=16)
    torch.testing.assert_close(got_torch, expected, atol=1e-5, rtol=0)
    got_triton = block_sparse_attention_triton(q, k, v, num, idx, block_size=16)
    torch.testing.assert_close(got_triton, expected, atol=1e-5, rtol=0)


def test_all_tiles_kept_is_dense_causal_attention() -> None:
    q, k, v = qkv(1, 2, 2, 37, 16, seed=4)
    num, idx = random_block_lists(1, 2, 37, 16, keep=1.0, seed=0)
    dense = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(
        block_sparse_attention_torch(q, k, v, num, idx, block_size=16), dense, atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        block_sparse_attention_triton(q, k, v, num, idx, block_size=16), dense, atol=1e-5, rtol=0
    )


def test_dropped_tiles_change_the_output_only_where_dropped() -> None:
    q, k, v = qkv(1, 1, 1, 48, 16, seed=5)
    dense_num, dense_idx = random_block_lists(1, 1, 48, 16, keep=1.0, seed=0)
    num, idx = dense_num.clone(), dense_idx.clone()
    num[0, 0, 2] = 2
    idx[0, 0, 2] = torch.tensor([1, 2, 3], dtype=torch.int32)  # query tile 2 drops key tile 0
    dense = block_sparse_attention_torch(q, k, v, dense_num, dense_idx, block_size=16)
    sparse = block_sparse_attention_torch(q, k, v, num, idx, block_size=16)
    torch.testing.assert_close(sparse[:, :, :32], dense[:, :, :32])
    assert (sparse[:, :, 32:] - dense[:, :, 32:]).abs().max() > 1e-3
    visible = torch.arange(16, 48)[None, :] <= torch.arange(32, 48)[:, None]
    manual = F.scaled_dot_product_attention(q[:, :, 32:], k[:, :, 16:], v[:, :, 16:], attn_mask=visible)
    torch.testing.assert_close(sparse[:, :, 32:], manual, atol=1e-5, rtol=0)


def test_expand_block_mask_is_causal_and_tile_shaped() -> None:
    num = torch.tensor([[[1, 1]]], dtype=torch.int32)
    idx = torch.tensor([[[0, 2], [1, 2]]], dtype=torch.int32)
    mask = expand_block_mask(num, idx, block_size=2, seq_len=3)[0, 0]
    expected = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)


def test_dispatcher_uses_torch_path_on_cpu() -> None:
    q, k, v = qkv(1, 2, 1, 20, 8, seed=6)
    num, idx = random_block_lists(1, 1, 20, 8, keep=0.5, seed=7)
    expected = block_sparse_attention_reference(q, k, v, num, idx, block_size=8)
    torch.testing.assert_close(
        block_sparse_attention(q, k, v, num, idx, block_size=8), expected, atol=1e-5, rtol=0
    )


def test_bad_inputs_raise_value_error() -> None:
    q, k, v = qkv(1, 3, 2, 16, 8)
    num, idx = random_block_lists(1, 2, 16, 8, keep=1.0)
    with pytest.raises(ValueError, match="multiple"):
        block_sparse_attention_torch(q, k, v, num, idx, block_size=8)
    q, k, v = qkv(1, 2, 2, 16, 8)
    with pytest.raises(ValueError, match="kv_num_blocks"):
        block_sparse_attention_torch(q, k, v, num[:, :1], idx, block_size=8)
    with pytest.raises(ValueError, match="power of two"):
        block_sparse_attention_triton(q, k, v, *random_block_lists(1, 2, 16, 8, 1.0), block_size=8)
