"""Varlen decode attention: fast grouped path vs the slow reference; tail merge is exact."""

from __future__ import annotations

import pytest
import torch

from trillium.kvcompress.ops import (
    grouped_attention,
    merge_attention_states,
    varlen_decode_attention,
    varlen_decode_attention_reference,
)


def _packed(lengths: list[int], dim: int, generator: torch.Generator):
    cu = torch.zeros(len(lengths) + 1, dtype=torch.long)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    total = int(cu[-1])
    return torch.randn(total, dim, generator=generator), torch.randn(total, dim, generator=generator), cu


@pytest.mark.parametrize(
    ("batch", "num_q_heads", "lengths", "q_len"),
    [(1, 4, [3, 7], 1), (1, 6, [5, 5, 5], 1), (2, 4, [4, 0, 2, 9], 3), (1, 2, [6, 6], 2)],
)
def test_varlen_matches_reference(batch: int, num_q_heads: int, lengths: list[int], q_len: int) -> None:
    g = torch.Generator().manual_seed(0)
    keys, values, cu = _packed(lengths, 8, g)
    query = torch.randn(batch, num_q_heads, q_len, 8, generator=g)
    out, lse = varlen_decode_attention(query, keys, values, cu, max(lengths), 8**-0.5)
    ref = varlen_decode_attention_reference(query, keys, values, cu, 8**-0.5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert lse.shape == (batch, num_q_heads, q_len)
    num_kv = len(lengths) // batch
    empty = [s for s, n in enumerate(lengths) if n == 0]
    for s in empty:
        b, h = divmod(s, num_kv)
        group = num_q_heads // num_kv
        assert torch.isinf(lse[b, h * group : (h + 1) * group]).all()


def test_prefix_plus_tail_merge_equals_attention_over_the_union() -> None:
    g = torch.Generator().manual_seed(1)
    lengths = [4, 6]
    keys, values, cu = _packed(lengths, 8, g)
    tail_k = torch.randn(1, 2, 3, 8, generator=g)
    tail_v = torch.randn(1, 2, 3, 8, generator=g)
    query = torch.randn(1, 4, 2, 8, generator=g)
    scale = 8**-0.5
    out_p, lse_p = varlen_decode_attention(query, keys, values, cu, 6, scale)
    out_t, lse_t = grouped_attention(query, tail_k, tail_v, scale, causal=True)
    merged = merge_attention_states(out_p, lse_p, out_t, lse_t)
    for hq in range(4):
        h = hq // 2
        k_pre, v_pre = keys[cu[h] : cu[h + 1]], values[cu[h] : cu[h + 1]]
        for qi in range(2):
            visible_tail = 3 - 2 + qi + 1  # causal: query qi sees tail keys 0..1+qi
            k = torch.cat([k_pre, tail_k[0, h, :visible_tail]])
            v = torch.cat([v_pre, tail_v[0, h, :visible_tail]])
            expected = torch.softmax(query[0, hq, qi] @ k.T * scale, dim=-1) @ v
            torch.testing.assert_close(merged[0, hq, qi], expected, atol=1e-5, rtol=1e-5)


def test_bad_shapes_raise() -> None:
    keys = torch.randn(6, 8)
    with pytest.raises(ValueError, match="query"):
        varlen_decode_attention(torch.randn(4, 1, 8), keys, keys, torch.tensor([0, 3, 6]), 3, 1.0)
    with pytest.raises(ValueError, match="KV heads"):
        varlen_decode_attention(torch.randn(1, 3, 1, 8), keys, keys, torch.tensor([0, 3, 6]), 3, 1.0)
