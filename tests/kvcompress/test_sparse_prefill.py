"""ST-SpAttn (PureKV ST-SpAttn, our mask design): plan rules, dense equivalence, backends, HF integration."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trillium.kvcompress.sparse_prefill import (
    AUDIO,
    TEXT,
    VIDEO,
    SparsePrefillPlan,
    SparsePrefillSession,
    STSparseParams,
    build_sparse_prefill_plan,
    detect_duplicate_frames,
    sparse_prefill,
    st_sparse_attention,
    st_sparse_attention_forward,
    st_sparse_attention_reference,
)

DENSE = STSparseParams(block_size=16, gamma=1.0, delta=2.0)


def video_prompt(
    text_prefix: int, frames: int, frame_size: int, text_suffix: int
) -> tuple[torch.Tensor, torch.Tensor]:
    modality = torch.tensor([TEXT] * text_prefix + [VIDEO] * (frames * frame_size) + [TEXT] * text_suffix)
    frame_index = torch.tensor(
        [-1] * text_prefix + [f for f in range(frames) for _ in range(frame_size)] + [-1] * text_suffix
    )
    return modality, frame_index


def random_qkv(seq_len: int, heads_q: int = 4, heads_kv: int = 2, dim: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(1, heads_q, seq_len, dim, generator=gen),
        torch.randn(1, heads_kv, seq_len, dim, generator=gen),
        torch.randn(1, heads_kv, seq_len, dim, generator=gen),
    )


def dense_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])


# 16 text tokens, 10 frames of 16 tokens, 11 text tokens: tiles of 16 align with frames.
MODALITY, FRAMES = video_prompt(16, 10, 16, 11)
LENGTH = MODALITY.numel()  # 187 = 11 full tiles + a partial one


@pytest.mark.parametrize("backend", ["torch", "triton", "reference"])
def test_gamma_one_and_delta_above_one_is_dense_causal_attention(backend: str) -> None:
    q, k, v = random_qkv(LENGTH)
    plan = build_sparse_prefill_plan(q, k, MODALITY, FRAMES, DENSE)
    causal = torch.ones(plan.num_blocks, plan.num_blocks, dtype=torch.bool).tril()
    assert torch.equal(plan.block_mask, causal.expand_as(plan.block_mask))
    assert plan.block_density() == 1.0 and plan.token_density() == pytest.approx(1.0)
    out = st_sparse_attention(q, k, v, plan, backend=backend)
    torch.testing.assert_close(out, dense_causal(q, k, v), atol=1e-5, rtol=0)


def test_structural_rules_with_gamma_zero() -> None:
    q, k, v = random_qkv(LENGTH, seed=1)
    plan = build_sparse_prefill_plan(
        q, k, MODALITY, FRAMES, STSparseParams(block_size=16, gamma=0.0, delta=2.0)
    )
    kept = plan.block_mask[0, 0].int()
    # tile 0 = text prefix (and sinks): kept by every query tile
    assert torch.all(kept[:, 0] == 1)
    # tile t holds frame t-1: video tile 6 keeps its own frame and the previous one only
    assert kept[6].tolist() == [1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    # tile 11 holds the text question: dense row
    assert torch.all(kept[11] == 1)
    assert 0.0 < plan.token_density() < 0.6
    expected = st_sparse_attention_reference(q, k, v, plan)
    torch.testing.assert_close(st_sparse_attention(q, k, v, plan), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(
        st_sparse_attention(q, k, v, plan, backend="triton"), expected, atol=1e-5, rtol=0
    )
    assert (expected - dense_causal(q, k, v)).abs().max() > 1e-3


def test_plans_denser_than_max_density_run_as_dense_attention() -> None:
    q, k, v = random_qkv(LENGTH, seed=1)
    plan = build_sparse_prefill_plan(
        q, k, MODALITY, FRAMES, STSparseParams(block_size=16, gamma=0.0, delta=2.0)
    )
    density = plan.token_density()
    sparse = st_sparse_attention_reference(q, k, v, plan)
    below = st_sparse_attention(q, k, v, plan, max_density=density + 0.01)  # sparse still pays
    torch.testing.assert_close(below, sparse, atol=1e-5, rtol=0)
    above = st_sparse_attention(q, k, v, plan, max_density=density - 0.01)  # past the break-even
    torch.testing.assert_close(above, dense_causal(q, k, v), atol=1e-5, rtol=0)
    assert plan.stats(density - 0.01)["dense_fallback"] == 1.0 and plan.stats()["dense_fallback"] == 0.0
    assert STSparseParams().max_density == 0.7
    with pytest.raises(ValueError, match="max_density"):
        STSparseParams(max_density=1.5)


def test_local_frames_widen_the_temporal_window() -> None:
    q, k, _ = random_qkv(LENGTH, seed=1)
    params = STSparseParams(block_size=16, gamma=0.0, delta=2.0, local_frames=3)
    kept = build_sparse_prefill_plan(q, k, MODALITY, FRAMES, params).block_mask[0, 0].int()
    assert kept[6].tolist() == [1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0]


def test_gamma_selects_the_heaviest_far_tile_first() -> None:
    q, k, _ = random_qkv(LENGTH, heads_q=1, heads_kv=1, seed=2)
    q, k = q * 0.01, k * 0.01
    direction = torch.zeros(16)
    direction[0] = 1.0
    q[0, 0, 16 * 8 : 16 * 9] += 4 * direction  # query tile 8 (frame 7) ...
    k[0, 0, 16 * 3 : 16 * 4] += 4 * direction  # ... strongly matches key tile 3 (frame 2)
    mass = STSparseParams(block_size=16, gamma=0.5, delta=2.0)
    kept = build_sparse_prefill_plan(q, k, MODALITY, FRAMES, mass).block_mask[0, 0]
    assert kept[8, 3] and not kept[8, 2] and not kept[8, 4]
    densities = [
        build_sparse_prefill_plan(
            q, k, MODALITY, FRAMES, STSparseParams(block_size=16, gamma=g, delta=2.0)
        ).block_density()
        for g in (0.0, 0.5, 0.95, 1.0)
    ]
    assert densities == sorted(densities) and densities[0] < densities[-1] == 1.0


def test_near_duplicate_frames_are_skipped_for_the_first_frame_of_their_run() -> None:
    q, k, v = random_qkv(LENGTH, seed=3)
    for frame in (3, 4, 5):  # frames 3-5 repeat frame 2 (tile 3)
        k[:, :, 16 * (frame + 1) : 16 * (frame + 2)] = k[:, :, 16 * 3 : 16 * 4]
    plan = build_sparse_prefill_plan(
        q, k, MODALITY, FRAMES, STSparseParams(block_size=16, gamma=1.0, delta=0.95)
    )
    assert plan.duplicate_frames[0, 0].tolist() == [
        False,
        False,
        False,
        True,
        True,
        True,
        False,
        False,
        False,
        False,
    ]
    kept = plan.block_mask[0, 0]
    # frame 8 (tile 9) skips the duplicate tiles 4-6 but keeps tile 3, the run's first frame
    assert kept[9, 3] and not kept[9, 4:7].any()
    # a duplicate frame's own neighbourhood stays: frame 5 (tile 6) keeps frame 4 (tile 5)
    assert kept[6, 5] and kept[6, 6]
    # the text question stays dense, duplicates included
    assert kept[11].all()


def test_detect_duplicate_frames_uses_corresponding_tokens() -> None:
    features = torch.randn(1, 1, 12, 8)
    features[:, :, 4:8] = features[:, :, 0:4] * 3.0  # frame 1 = frame 0 scaled: cosine 1
    features[:, :, 8:12] = features[:, :, 0:4].flip(2)  # frame 2 = frame 0 tokens in another order
    ordinal = torch.arange(12) // 4
    flags = detect_duplicate_frames(features, ordinal, 3, delta=0.95)
    assert flags[0, 0].tolist() == [False, True, False]
    assert not detect_duplicate_frames(features, ordinal, 3, delta=1.5).any()


def test_audio_between_frames_and_non_video_rows_are_dense() -> None:
    # text(16) f0(16) audio(16) f1(16) f2(16) f3(16): frame ordinals ignore the audio between frames
    modality = torch.tensor([TEXT] * 16 + [VIDEO] * 16 + [AUDIO] * 16 + [VIDEO] * 48)
    frames = torch.tensor([-1] * 16 + [0] * 16 + [-1] * 16 + [1] * 16 + [2] * 16 + [3] * 16)
    q, k, _ = random_qkv(96, seed=4)
    kept = build_sparse_prefill_plan(
        q, k, modality, frames, STSparseParams(block_size=16, gamma=0.0, delta=2.0)
    )
    rows = kept.block_mask[0, 0].int()
    assert rows[2].tolist() == [1, 1, 1, 0, 0, 0]  # audio query tile: dense
    assert rows[3].tolist() == [1, 1, 0, 1, 0, 0]  # frame 1 keeps frame 0 (previous frame) and itself
    assert rows[5].tolist() == [1, 0, 0, 0, 1, 1]  # frame 3 keeps frame 2 only


def test_prompt_without_video_is_dense_causal() -> None:
    modality = torch.tensor([TEXT] * 20 + [AUDIO] * 12)
    frames = torch.full((32,), -1)
    q, k, _ = random_qkv(32, seed=5)
    plan = build_sparse_prefill_plan(q, k, modality, frames, STSparseParams(block_size=8, gamma=0.0))
    assert torch.equal(plan.block_mask[0, 0], torch.ones(4, 4, dtype=torch.bool).tril())


def test_plan_from_block_mask_and_token_density() -> None:
    block_mask = torch.eye(3, dtype=torch.bool).expand(1, 1, 3, 3)
    plan = SparsePrefillPlan.from_block_mask(block_mask, block_size=4, seq_len=10)
    assert plan.kv_num_blocks.tolist() == [[[1, 1, 1]]]
    assert plan.kv_indices[0, 0, :, 0].tolist() == [0, 1, 2]
    # diagonal tiles of 4, 4 and 2 tokens: 10 + 10 + 3 causal pairs out of 55
    assert plan.token_density() == pytest.approx(23 / 55)
    assert plan.stats()["block_density"] == pytest.approx(3 / 6)


def test_bad_arguments_raise_value_error() -> None:
    q, k, _ = random_qkv(LENGTH)
    with pytest.raises(ValueError, match="modality"):
        build_sparse_prefill_plan(q, k, MODALITY[:-1], FRAMES)
    with pytest.raises(ValueError, match="frame_index"):
        build_sparse_prefill_plan(q, k, MODALITY, torch.full_like(FRAMES, -1))
    with pytest.raises(ValueError, match="gamma"):
        STSparseParams(gamma=1.5)
    with pytest.raises(ValueError, match="values"):
        build_sparse_prefill_plan(q, k, MODALITY, FRAMES, STSparseParams(duplicate_source="values"))
    plan = build_sparse_prefill_plan(q, k, MODALITY, FRAMES, DENSE)
    with pytest.raises(ValueError, match="backend"):
        st_sparse_attention(q, k, k, plan, backend="cuda")


@pytest.mark.slow
def test_compiled_flex_backend_matches_reference() -> None:
    q, k, v = random_qkv(LENGTH, seed=5)
    plan = build_sparse_prefill_plan(q, k, MODALITY, FRAMES, STSparseParams(block_size=16, gamma=0.3))
    expected = st_sparse_attention_reference(q, k, v, plan)
    torch.testing.assert_close(
        st_sparse_attention(q, k, v, plan, backend="flex"), expected, atol=1e-5, rtol=0
    )


class CausalAttention(torch.nn.Module):
    is_causal = True
    num_key_value_groups = 2


def test_attention_function_falls_back_to_sdpa_outside_prefill() -> None:
    from trillium.kvcompress import sparse_prefill as module

    q, k, v = random_qkv(LENGTH, seed=6)
    expected = dense_causal(q, k, v).transpose(1, 2)
    out, _ = st_sparse_attention_forward(CausalAttention(), q, k, v, None)  # no active session
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    session = SparsePrefillSession(MODALITY, FRAMES, STSparseParams(block_size=16, gamma=0.0))
    token = module._ACTIVE_SESSION.set(session)
    try:
        sparse, _ = st_sparse_attention_forward(CausalAttention(), q, k, v, None)
        assert len(session.plans) == 1 and (sparse - expected).abs().max() > 1e-3
        padded_mask = torch.ones(1, 1, LENGTH, LENGTH, dtype=torch.bool).tril()
        masked, _ = st_sparse_attention_forward(CausalAttention(), q, k, v, padded_mask)
        windowed, _ = st_sparse_attention_forward(CausalAttention(), q, k, v, None, sliding_window=8)
        assert len(session.plans) == 1  # explicit masks and sliding windows are left to SDPA
        torch.testing.assert_close(masked, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(windowed, expected, atol=1e-5, rtol=0)
    finally:
        module._ACTIVE_SESSION.reset(token)


def tiny_qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=1000,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return Qwen2ForCausalLM(config).eval()


def test_hugging_face_prefill_dense_equivalence_sparse_effect_and_decode_fallback() -> None:
    from transformers import DynamicCache

    model = tiny_qwen2()
    ids = torch.randint(0, 1000, (1, LENGTH), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(ids).logits
        with sparse_prefill(model, MODALITY, FRAMES, DENSE) as session:
            dense_logits = model(ids).logits
        assert len(session.plans) == 2  # one plan per decoder layer
        torch.testing.assert_close(dense_logits, reference, atol=1e-4, rtol=0)

        sparse = STSparseParams(block_size=16, gamma=0.0, delta=2.0)
        with sparse_prefill(model, MODALITY, FRAMES, sparse) as session:
            cache = DynamicCache(config=model.config)
            logits = model(ids, past_key_values=cache).logits
            next_logits = model(logits[:, -1:].argmax(-1), past_key_values=cache).logits
        assert len(session.plans) == 2  # the decode step fell back to SDPA
        assert session.plans[0].token_density() < 0.6
        assert session.stats[1] == session.plans[1].stats()
        with sparse_prefill(model, MODALITY, FRAMES, sparse, keep_plans=False) as light:
            model(ids)
        assert light.plans == [] and light.stats == session.stats
        assert (logits - reference).abs().max() > 1e-3
        assert torch.isfinite(next_logits).all()
    assert model.config._attn_implementation == "sdpa"


def test_vision_language_model_sparsifies_only_the_text_decoder() -> None:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(0)
    text = {
        "vocab_size": 1000,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [4, 6, 6]},
    }
    vision = {"depth": 2, "embed_dim": 64, "hidden_size": 128, "num_heads": 2, "patch_size": 14}
    config = Qwen2VLConfig(
        text_config=text, vision_config=vision, video_token_id=999, vision_start_token_id=997
    )
    model = Qwen2VLForConditionalGeneration(config).eval()
    video_token = 999
    # 6 temporal frames of a 4x4 patch grid -> 4 tokens per frame after the 2x2 merge
    grid = torch.tensor([[6, 4, 4]])
    pixels = torch.randn(6 * 16, 3 * 2 * 14 * 14)
    ids = torch.cat(
        [torch.randint(0, 900, (1, 4)), torch.full((1, 24), video_token), torch.randint(0, 900, (1, 4))], 1
    )
    is_video = ids[0] == video_token
    modality = torch.where(is_video, VIDEO, TEXT)
    frames = torch.where(is_video, (torch.cumsum(is_video.long(), 0) - 1) // 4, -1)
    inputs = {
        "input_ids": ids,
        "pixel_values_videos": pixels,
        "video_grid_thw": grid,
        "mm_token_type_ids": (ids == video_token).long() * 2,
    }
    with torch.no_grad():
        reference = model(**inputs).logits
        params = STSparseParams(block_size=4, gamma=0.0, delta=2.0)
        with sparse_prefill(model, modality, frames, params) as session:
            assert model.config.vision_config._attn_implementation == "sdpa"
            logits = model(**inputs).logits
    assert len(session.plans) == 2
    assert session.plans[0].block_density() < 0.8
    assert (logits - reference).abs().max() > 1e-4
    assert model.config.text_config._attn_implementation == "sdpa"
