"""Packing kept tokens into a ragged per-head cache: torch and Triton (interpreter) vs the loop reference."""

from __future__ import annotations

import pytest
import torch

from trillium.kvcompress.kernels import gather_kept_tokens, kept_indices_from_mask
from trillium.kvcompress.kernels.gather_kept import (
    gather_kept_reference,
    gather_kept_torch,
    gather_kept_triton,
)


def ragged_case(dtype: torch.dtype = torch.float32):
    gen = torch.Generator().manual_seed(0)
    keys = torch.randn(2, 3, 20, 16, generator=gen).to(dtype)
    values = torch.randn(2, 3, 20, 8, generator=gen).to(dtype)
    kept = [
        torch.tensor([0, 5, 19]),
        torch.tensor([], dtype=torch.long),  # a head with nothing kept
        torch.tensor([7]),  # a head with one token
        torch.arange(20),
        torch.tensor([2, 3]),
        torch.tensor([19]),
    ]
    return keys, values, kept


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("implementation", [gather_kept_torch, gather_kept_triton])
def test_matches_reference_with_empty_and_single_token_heads(dtype: torch.dtype, implementation) -> None:
    keys, values, kept = ragged_case(dtype)
    expected = gather_kept_reference(keys, values, kept)
    got = implementation(keys, values, kept)
    for got_part, expected_part in zip(got, expected):
        assert torch.equal(got_part, expected_part)
    assert got[2].tolist() == [0, 3, 3, 4, 24, 26, 27]
    assert torch.equal(got[0][3], keys[0, 2, 7])  # first row of segment 2 is token 7 of head 2


def test_three_dimensional_input_and_mask_roundtrip() -> None:
    keys, values, _ = ragged_case()
    mask = torch.zeros(3, 20, dtype=torch.bool)
    mask[0, [1, 4]] = True
    mask[2, 19] = True
    kept = kept_indices_from_mask(mask)
    assert [k.tolist() for k in kept] == [[1, 4], [], [19]]
    packed_keys, packed_values, offsets = gather_kept_triton(keys[0], values[0], kept)
    assert offsets.tolist() == [0, 2, 2, 3]
    assert torch.equal(packed_keys, torch.stack([keys[0, 0, 1], keys[0, 0, 4], keys[0, 2, 19]]))
    assert torch.equal(packed_values, gather_kept_tokens(keys[0], values[0], kept)[1])


def test_everything_dropped_gives_empty_cache() -> None:
    keys, values, _ = ragged_case()
    empty = [torch.tensor([], dtype=torch.long)] * 3
    packed_keys, packed_values, offsets = gather_kept_triton(keys[0], values[0], empty)
    assert packed_keys.shape == (0, 16) and packed_values.shape == (0, 8)
    assert offsets.tolist() == [0, 0, 0, 0]


def test_bad_inputs_raise_value_error() -> None:
    keys, values, kept = ragged_case()
    with pytest.raises(ValueError, match="one tensor per segment"):
        gather_kept_torch(keys, values, kept[:2])
    bad = [*kept[:5], torch.tensor([20])]
    with pytest.raises(ValueError, match="outside"):
        gather_kept_torch(keys, values, bad)
    with pytest.raises(ValueError, match="bool"):
        kept_indices_from_mask(torch.ones(3, 4))
