"""Observation-window scores: Triton kernel (interpreter) and torch reference vs a per-row loop.

Tolerances: fp32 atol 1e-5; fp16 inputs atol 1e-3 (scores are probability sums of order 1).
"""

from __future__ import annotations

import math

import pytest
import torch

from trillium.kvcompress.kernels import window_scores
from trillium.kvcompress.kernels.window_scoring import window_scores_reference, window_scores_triton


def loop_scores(queries: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Per (batch, query head, row) softmax written out, GQA mean at the end."""
    batch, heads_q, _, dim = queries.shape
    heads_kv, length = keys.shape[1], keys.shape[2]
    group = heads_q // heads_kv
    out = torch.zeros(batch, heads_kv, length, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads_q):
            for p, row in enumerate(rows.tolist()):
                logits = keys[b, h // group, : row + 1].double() @ queries[b, h, p].double() / math.sqrt(dim)
                out[b, h // group, : row + 1] += torch.softmax(logits, 0) / group
    return out.float()


def inputs(seed: int, length: int = 70, rows: int = 5):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, rows, 16, generator=gen), torch.randn(2, 2, length, 16, generator=gen)


def test_reference_matches_loop_and_sums_to_window_size() -> None:
    q, k = inputs(0)
    rows = torch.arange(65, 70)
    scores = window_scores_reference(q, k)
    torch.testing.assert_close(scores, loop_scores(q, k, rows), atol=1e-5, rtol=0)
    torch.testing.assert_close(scores.sum(-1), torch.full((2, 2), 5.0), atol=1e-4, rtol=0)
    assert torch.all(scores[..., :] >= 0)


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-5), (torch.float16, 1e-3)])
def test_triton_matches_reference_last_window(dtype: torch.dtype, atol: float) -> None:
    q, k = inputs(1)
    q, k = q.to(dtype), k.to(dtype)
    expected = window_scores_reference(q, k)
    torch.testing.assert_close(window_scores_triton(q, k, block_n=32), expected, atol=atol, rtol=0)


def test_triton_matches_reference_scattered_rows_and_single_row() -> None:
    q, k = inputs(2, length=37)
    rows = torch.tensor([3, 36, 0, 20, 11])
    torch.testing.assert_close(window_scores_triton(q, k, rows), loop_scores(q, k, rows), atol=1e-5, rtol=0)
    one_q, one_k = inputs(3, length=19, rows=1)
    torch.testing.assert_close(
        window_scores_triton(one_q, one_k), window_scores_reference(one_q, one_k), atol=1e-5, rtol=0
    )


def test_row_zero_sees_only_the_first_key() -> None:
    q, k = inputs(4, length=10, rows=1)
    scores = window_scores(q, k, rows=torch.tensor([0]))
    assert torch.allclose(scores[..., 0], torch.ones(2, 2))
    assert torch.all(scores[..., 1:] == 0)


def test_bad_inputs_raise_value_error() -> None:
    q, k = inputs(5, length=4, rows=5)
    with pytest.raises(ValueError, match="window queries"):
        window_scores_reference(q, k)
    q, k = inputs(5)
    with pytest.raises(ValueError, match="rows"):
        window_scores_reference(q, k, rows=torch.tensor([0, 1, 2, 3, 99]))
