"""CompressedLayer: exact bytes, logical length, decode attention over prefix + tail."""

from __future__ import annotations

import pytest
import torch

from trillium.kvcompress.cache import CompressedCache, CompressedLayer
from trillium.kvcompress.ops import varlen_decode_attention_reference


def test_packed_storage_bytes_are_exact_and_tail_grows_in_chunks() -> None:
    layer = CompressedLayer(tail_chunk=4)
    dense_k = torch.randn(1, 2, 10, 8)
    layer.update(dense_k, dense_k.clone(), 0)
    assert layer.get_seq_length() == 10 and layer.nbytes() == 2 * 2 * 10 * 8 * 4
    layer.load_compressed([dense_k[0, 0, :3], dense_k[0, 1, :6]], [dense_k[0, 0, :3], dense_k[0, 1, :6]], 10)
    assert layer.kept_per_head() == [3, 6] and not layer.is_uniform
    assert layer.nbytes() == 2 * 9 * 8 * 4 + 3 * 8  # keys + values + segment offsets, no padding
    assert layer.cu_seqlens.tolist() == layer.seg_offsets.tolist() == [0, 3, 9]
    step = torch.randn(1, 2, 1, 8)
    layer.update(step, step, 0)
    assert layer.get_seq_length() == 11  # logical: original prompt + decoded
    assert layer.nbytes() == 2 * (9 + 2 * 4) * 8 * 4 + 3 * 8  # each head reserved one chunk of 4
    for _ in range(3):
        layer.update(step, step, 0)
    assert layer.nbytes() == 2 * (9 + 2 * 4) * 8 * 4 + 3 * 8  # still inside the reserved chunk
    torch.testing.assert_close(layer.dense_prefix(1)[0], dense_k[0, 1, :6])
    uniform = CompressedLayer(tail_chunk=4)
    uniform.update(dense_k, dense_k.clone(), 0)
    uniform.load_compressed(
        [dense_k[0, 0, :5], dense_k[0, 1, 2:7]], [dense_k[0, 0, :5], dense_k[0, 1, 2:7]], 10
    )
    assert uniform.is_uniform and uniform.nbytes() == 2 * 2 * 5 * 8 * 4
    cache = CompressedCache(2)
    assert cache.nbytes() == 0 and not cache.is_compressed


@pytest.mark.parametrize("kept", [[[0, 5, 11], [1, 2, 3, 7, 9, 11]], [[0, 4, 6, 11], [1, 2, 3, 11]]])
def test_attend_equals_reference_over_kept_and_decoded_tokens(kept) -> None:
    g = torch.Generator().manual_seed(0)
    layer = CompressedLayer(tail_chunk=2)
    dense = torch.randn(1, 2, 12, 8, generator=g)
    values = torch.randn(1, 2, 12, 8, generator=g)
    layer.update(dense, values, 0)
    kept = [torch.tensor(k) for k in kept]
    layer.load_compressed(
        [dense[0, h, i] for h, i in enumerate(kept)], [values[0, h, i] for h, i in enumerate(kept)], 12
    )
    tail_k, tail_v = [], []
    for q_len in (1, 1, 2, 1):  # decode steps crossing reallocations, one with two new tokens
        k, v = torch.randn(1, 2, q_len, 8, generator=g), torch.randn(1, 2, q_len, 8, generator=g)
        tail_k.append(k)
        tail_v.append(v)
        layer.update(k, v, 0)
        query = torch.randn(1, 4, q_len, 8, generator=g)
        got = layer.attend(query, 8**-0.5)
        for i in range(q_len):  # query i sees the kept entries and decoded tokens up to its own
            visible = sum(t.shape[2] for t in tail_k) - q_len + i + 1
            ks = [torch.cat([dense[0, h, kept[h]], torch.cat(tail_k, 2)[0, h, :visible]]) for h in range(2)]
            vs = [torch.cat([values[0, h, kept[h]], torch.cat(tail_v, 2)[0, h, :visible]]) for h in range(2)]
            cu = torch.tensor([0, ks[0].shape[0], ks[0].shape[0] + ks[1].shape[0]])
            ref = varlen_decode_attention_reference(
                query[:, :, i : i + 1], torch.cat(ks), torch.cat(vs), cu, 8**-0.5
            )
            torch.testing.assert_close(got[:, :, i : i + 1], ref, atol=1e-5, rtol=1e-5)
