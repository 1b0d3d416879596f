"""Scoring building blocks against the model's own attention and hand-computed values."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from trillium.kvcompress import Modality, TokenLayout
from trillium.kvcompress.hf import decoder_layers
from trillium.kvcompress.scoring import (
    accumulated_attention,
    cross_layer_importance,
    gqa_mean,
    interaction_ratio,
    key_norm_scores,
    pool_scores,
    recompute_queries,
    redistributed_scores_from_matrix,
    redistributed_scores_full,
    redistributed_scores_window,
    rows_attention,
    sample_visual_rows,
    value_norm_scores,
    window_indices,
)


def _eager_capture(model, input_ids):
    """Run an eager prefill; return per layer (attention module, hidden, pos_emb, weights, keys)."""
    layers = decoder_layers(model)
    config = layers[0].self_attn.config
    captured = {}

    def hook(module, args, kwargs, output):
        captured[module.layer_idx] = (
            module,
            kwargs["hidden_states"],
            kwargs["position_embeddings"],
            output[1],
        )

    handles = [layer.self_attn.register_forward_hook(hook, with_kwargs=True) for layer in layers]
    previous = config._attn_implementation
    config._attn_implementation = "eager"
    cache = DynamicCache()
    try:
        with torch.no_grad():
            model(input_ids, past_key_values=cache, use_cache=True)
    finally:
        config._attn_implementation = previous
        for h in handles:
            h.remove()
    return [(*captured[i], cache.layers[i].keys) for i in range(len(layers))]


def test_recomputed_window_rows_equal_the_models_attention(tiny_qwen2, av_prompt) -> None:
    for attention, hidden, pos_emb, weights, keys in _eager_capture(tiny_qwen2, av_prompt):
        rows = torch.tensor([3, 40, 70, 80, 81])
        with torch.no_grad():
            queries = recompute_queries(attention, hidden, pos_emb, rows)
            probs = rows_attention(queries, keys, rows, attention.scaling)
        torch.testing.assert_close(probs, weights[:, :, rows].float(), atol=1e-5, rtol=1e-4)


def test_accumulated_and_redistributed_scores(tiny_qwen2, av_prompt) -> None:
    attention, hidden, pos_emb, weights, keys = _eager_capture(tiny_qwen2, av_prompt)[1]
    acc = accumulated_attention(weights, num_kv_heads=2)
    torch.testing.assert_close(acc, gqa_mean(weights.sum(dim=2), 2))
    length = weights.shape[-1]
    # reference redistribution written entry by entry on one head
    w = weights[0, 0].double()
    manual = torch.zeros(length, dtype=torch.float64)
    for i in range(length):
        for j in range(i + 1):
            manual[j] += w[i, j] * (i + 1) / (length - j)
    per_head = redistributed_scores_from_matrix(weights, num_kv_heads=4)  # no GQA averaging
    torch.testing.assert_close(per_head[0, 0].double(), manual, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        chunked = redistributed_scores_full(attention, hidden, pos_emb, keys, chunk_size=7)
    torch.testing.assert_close(chunked, redistributed_scores_from_matrix(weights, 2), atol=1e-4, rtol=1e-4)
    # redistribution removes the early-token bias of plain accumulation on uniform causal attention
    uniform = torch.tril(torch.ones(length, length)) / torch.arange(1, length + 1).unsqueeze(1)
    flat = redistributed_scores_from_matrix(uniform.view(1, 1, length, length), 1)[0, 0]
    torch.testing.assert_close(flat, torch.ones(length))
    assert accumulated_attention(uniform.view(1, 1, length, length), 1)[0, 0, 0] > 4


def test_window_redistribution_counts_window_queries() -> None:
    probs = torch.tensor([[[[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]]]])  # rows 1 and 2 of L=3
    rows = torch.tensor([1, 2])
    got = redistributed_scores_window(probs, rows, 1)[0, 0]
    expected = torch.tensor([(0.5 * 2 + 0.2 * 3) / 2, (0.5 * 2 + 0.3 * 3) / 2, (0.5 * 3) / 1])
    torch.testing.assert_close(got, expected)


def test_pooling_gqa_norms_and_cross_layer() -> None:
    scores = torch.tensor([[[0.0, 0.0, 3.0, 0.0, 0.0]]])
    torch.testing.assert_close(pool_scores(scores, 3), torch.tensor([[[0.0, 1.0, 1.0, 1.0, 0.0]]]))
    assert torch.equal(pool_scores(scores, 1), scores)
    per_q = torch.arange(8.0).view(1, 4, 2)
    torch.testing.assert_close(gqa_mean(per_q, 2), torch.tensor([[[1.0, 2.0], [5.0, 6.0]]]))
    keys = torch.tensor([[[[3.0, 4.0], [0.0, 1.0]]]])
    torch.testing.assert_close(key_norm_scores(keys), torch.tensor([[[-5.0, -1.0]]]))
    torch.testing.assert_close(value_norm_scores(keys), torch.tensor([[[5.0, 1.0]]]))
    low = torch.tensor([[[0.2, 0.8]]])
    torch.testing.assert_close(cross_layer_importance(low, keys), torch.tensor([[[1.0, 0.8]]]))
    assert window_indices(10, 4).tolist() == [6, 7, 8, 9] and window_indices(3, 8).tolist() == [0, 1, 2]


def test_interaction_ratio_and_visual_rows() -> None:
    layout = TokenLayout.concat([TokenLayout.text(2), TokenLayout.image(1, 2), TokenLayout.text(1)])
    rows = torch.tensor([2, 4])  # one visual query, one text query
    probs = torch.zeros(1, 2, 2, 5)
    probs[0, 0, 0, :3] = torch.tensor([0.6, 0.0, 0.4])  # visual query: 0.6 to text
    probs[0, 0, 1] = torch.tensor([0.1, 0.1, 0.3, 0.2, 0.3])  # text query: 0.5 to visual
    probs[0, 1, 0, 2] = 1.0  # head 1: visual attends itself only
    probs[0, 1, 1, 4] = 1.0  # text attends itself only
    rho = interaction_ratio(probs, rows, layout)
    torch.testing.assert_close(rho, torch.tensor([((0.6 + 0.5) / 2 + 0.0) / 2]))
    video = TokenLayout.concat([TokenLayout.text(1), TokenLayout.video(2, 2, 3)])
    sampled = sample_visual_rows(video, per_unit=2)
    assert sampled.tolist() == [1, 6, 7, 12]
    assert video.modality[sampled].eq(int(Modality.VIDEO)).all()


def test_spearman_and_scoring_layer_calibration() -> None:
    from trillium.kvcompress.scoring import choose_scoring_layer, spearman_correlation

    a = torch.tensor([0.1, 0.5, 0.3, 0.9])
    assert spearman_correlation(a, a * 10 + 1) == pytest.approx(1.0)
    assert spearman_correlation(a, -a) == pytest.approx(-1.0)
    g = torch.Generator().manual_seed(0)
    base = torch.rand(2, 30, generator=g)
    # layer 1 ranks like the deep layers 2 and 3; layer 0 is noise
    layers = [torch.rand(2, 30, generator=g), base, base + 0.01 * torch.rand(2, 30, generator=g), base * 2]
    assert choose_scoring_layer([layers]) == 1
    with pytest.raises(ValueError, match="prompt_layer_scores"):
        choose_scoring_layer([[base]])
