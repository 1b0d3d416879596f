"""Ragged decode attention: the Triton kernel (interpreter) vs the torch version and reference in ops.varlen.

Tolerances: fp32 atol 1e-5; fp16 inputs atol 2e-3; log-sum-exp atol 1e-4 (fp32) / 1e-2 (fp16).
"""

from __future__ import annotations

import pytest
import torch

from trillium.kvcompress.kernels import varlen_decode_attention
from trillium.kvcompress.kernels.varlen_decode import (
    varlen_decode_attention_torch,
    varlen_decode_attention_triton,
)
from trillium.kvcompress.ops.varlen import varlen_decode_attention_reference


def ragged_cache(dtype: torch.dtype, q_len: int, dim_v: int = 8):
    gen = torch.Generator().manual_seed(q_len)
    # B=2, H_kv=2: segment lengths 5, 0 (empty head), 1 (single token), 70 (longer than a key block)
    cu_seqlens = torch.tensor([0, 5, 5, 6, 76])
    keys = torch.randn(76, 16, generator=gen).to(dtype)
    values = torch.randn(76, dim_v, generator=gen).to(dtype)
    query = torch.randn(2, 4, q_len, 16, generator=gen).to(dtype)
    return query, keys, values, cu_seqlens


@pytest.mark.parametrize(
    ("dtype", "atol", "lse_atol"), [(torch.float32, 1e-5, 1e-4), (torch.float16, 2e-3, 1e-2)]
)
@pytest.mark.parametrize("q_len", [1, 3])
def test_triton_matches_torch_and_reference(
    dtype: torch.dtype, atol: float, lse_atol: float, q_len: int
) -> None:
    query, keys, values, cu = ragged_cache(dtype, q_len)
    out, lse = varlen_decode_attention_triton(query, keys, values, cu, 70, 0.25)
    expected_out, expected_lse = varlen_decode_attention_torch(query, keys, values, cu, 70, 0.25)
    assert out.dtype == dtype and lse.dtype == torch.float32
    torch.testing.assert_close(out.float(), expected_out.float(), atol=atol, rtol=0)
    torch.testing.assert_close(lse, expected_lse, atol=lse_atol, rtol=0)
    reference = varlen_decode_attention_reference(query, keys, values, cu, 0.25)
    torch.testing.assert_close(out.float(), reference.float(), atol=atol, rtol=0)


def test_empty_segment_gives_zero_output_and_minus_inf_lse() -> None:
    query, keys, values, cu = ragged_cache(torch.float32, 1)
    out, lse = varlen_decode_attention_triton(query, keys, values, cu, 70, 0.25)
    # segment 1 = batch 0, KV head 1 -> query heads 2 and 3 of batch 0
    assert torch.all(out[0, 2:] == 0)
    assert torch.all(torch.isinf(lse[0, 2:])) and torch.all(lse[0, 2:] < 0)
    # a single-token segment returns that token's value exactly
    torch.testing.assert_close(out[1, :2, 0], values[5].expand(2, -1), atol=1e-6, rtol=0)


def test_short_block_loop_and_dispatch() -> None:
    query, keys, values, cu = ragged_cache(torch.float32, 2, dim_v=12)
    out, _ = varlen_decode_attention_triton(query, keys, values, cu, 70, 0.3, block_n=16)
    expected, _ = varlen_decode_attention(query, keys, values, cu, 70, 0.3)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_bad_inputs_raise_value_error() -> None:
    query, keys, values, cu = ragged_cache(torch.float32, 1)
    with pytest.raises(ValueError, match="cu_seqlens"):
        varlen_decode_attention_triton(query[:, :3], keys, values, cu, 70, 0.25)
    with pytest.raises(ValueError, match="query"):
        varlen_decode_attention_triton(query[0], keys, values, cu, 70, 0.25)
