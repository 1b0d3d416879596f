"""Hugging Face integration end to end: Qwen2 text model, Qwen2-VL and Qwen2.5-VL language models."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
)

from trillium.kvcompress import (
    ComposedPolicy,
    Modality,
    SnapKV,
    TokenLayout,
    compress,
    generate_with_policy,
    make_policy,
)
from trillium.kvcompress.hf import prompt_position_ids

IMAGE, VIDEO, V_START, V_END = 290, 291, 292, 293
TEXT_CONFIG = {
    "vocab_size": 300,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mrope_section": [4, 6, 6]},
}
TOKEN_IDS = {
    "image_token_id": IMAGE,
    "video_token_id": VIDEO,
    "vision_start_token_id": V_START,
    "vision_end_token_id": V_END,
}


def _qwen2_vl():
    torch.manual_seed(0)
    vision = {
        "depth": 2,
        "embed_dim": 64,
        "hidden_size": 128,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    return Qwen2VLForConditionalGeneration(
        Qwen2VLConfig(text_config=TEXT_CONFIG, vision_config=vision, **TOKEN_IDS)
    ).eval()


def _qwen2_5_vl():
    torch.manual_seed(0)
    vision = {
        "depth": 2,
        "hidden_size": 64,
        "out_hidden_size": 128,
        "intermediate_size": 128,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 56,
        "fullatt_block_indexes": [1],
    }
    return Qwen2_5_VLForConditionalGeneration(
        Qwen2_5_VLConfig(text_config=TEXT_CONFIG, vision_config=vision, **TOKEN_IDS)
    ).eval()


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def vlm(request):
    model = _qwen2_vl() if request.param == "qwen2_vl" else _qwen2_5_vl()
    g = torch.Generator().manual_seed(5)
    ids = torch.cat(
        [
            torch.randint(0, 280, (1, 5), generator=g),
            torch.tensor([[V_START] + [IMAGE] * 4 + [V_END]]),
            torch.randint(0, 280, (1, 9), generator=g),
        ],
        dim=1,
    )
    inputs = {
        "pixel_values": torch.randn(16, 3 * 2 * 14 * 14, generator=g),
        "image_grid_thw": torch.tensor([[1, 4, 4]]),
    }
    layout = TokenLayout.from_qwen2_vl(ids, image_token_id=IMAGE, image_grid_thw=inputs["image_grid_thw"])
    return model, ids, inputs, layout


def test_qwen2_full_budget_matches_hf_generate(tiny_qwen2, av_prompt, av_layout) -> None:
    result = generate_with_policy(
        tiny_qwen2,
        av_prompt,
        layout=av_layout,
        policy=make_policy("streaming_llm", budget=1.0),
        max_new_tokens=6,
        show_progress=False,
    )
    expected = tiny_qwen2.generate(av_prompt, max_new_tokens=6, do_sample=False)[0, av_prompt.shape[1] :]
    assert result.tokens.tolist() == expected.tolist()
    assert result.report.bytes_after >= result.report.bytes_before


def test_inputs_embeds_equals_input_ids(tiny_qwen2, av_prompt, av_layout) -> None:
    policy = make_policy("snapkv", budget=0.3, window=8)
    by_ids = generate_with_policy(
        tiny_qwen2, av_prompt, layout=av_layout, policy=policy, max_new_tokens=5, show_progress=False
    )
    embeds = tiny_qwen2.get_input_embeddings()(av_prompt).detach()
    by_embeds = generate_with_policy(
        tiny_qwen2,
        inputs_embeds=embeds,
        layout=av_layout,
        policy=policy,
        max_new_tokens=5,
        show_progress=False,
    )
    assert by_embeds.tokens.tolist() == by_ids.tokens.tolist()
    assert by_embeds.report.kept_per_layer_head == by_ids.report.kept_per_layer_head


def test_eos_and_sampling(tiny_qwen2, av_prompt, av_layout) -> None:
    policy = make_policy("h2o", budget=0.5)
    greedy = generate_with_policy(
        tiny_qwen2, av_prompt, layout=av_layout, policy=policy, max_new_tokens=6, show_progress=False
    )
    stop_at = int(greedy.tokens[1])
    stopped = generate_with_policy(
        tiny_qwen2,
        av_prompt,
        layout=av_layout,
        policy=policy,
        max_new_tokens=6,
        eos_token_id=[stop_at],
        show_progress=False,
    )
    first = greedy.tokens.tolist().index(stop_at)
    assert stopped.tokens.tolist() == greedy.tokens.tolist()[: first + 1] and stopped.stopped_by_eos
    sampled = [
        generate_with_policy(
            tiny_qwen2,
            av_prompt,
            layout=av_layout,
            policy=policy,
            max_new_tokens=6,
            temperature=5.0,
            seed=7,
            show_progress=False,
        ).tokens.tolist()
        for _ in range(2)
    ]
    assert sampled[0] == sampled[1] and sampled[0] != greedy.tokens.tolist()
    nucleus = generate_with_policy(
        tiny_qwen2,
        av_prompt,
        layout=av_layout,
        policy=policy,
        max_new_tokens=6,
        temperature=5.0,
        top_p=1e-6,
        seed=7,
        show_progress=False,
    )
    assert nucleus.tokens.tolist() == greedy.tokens.tolist()


def test_bad_input_raises_value_error_naming_the_argument(tiny_qwen2, av_prompt, av_layout) -> None:
    snap = make_policy("snapkv")
    cases = [
        ({"layout": TokenLayout.text(5), "policy": snap}, "layout describes 5 tokens"),
        ({"layout": TokenLayout.video(1, 2, 41), "policy": make_policy("flowmm")}, "layout has no text"),
        (
            {
                "layout": TokenLayout.concat([TokenLayout.text(72), TokenLayout.video(1, 2, 5)]),
                "policy": make_policy("acckv"),
            },
            "layout has no audio",
        ),
        ({"layout": av_layout, "policy": snap, "max_new_tokens": 0}, "max_new_tokens"),
        ({"layout": av_layout, "policy": snap, "top_p": 0.0}, "top_p"),
        ({"layout": av_layout, "policy": snap, "temperature": -1.0}, "temperature"),
        (
            {"layout": av_layout, "policy": snap, "inputs_embeds": torch.zeros(1, 82, 128)},
            "input_ids or inputs_embeds",
        ),
        ({"layout": av_layout, "policy": "snapkv"}, "policy must be a Policy"),
    ]
    for kwargs, match in cases:
        kwargs.setdefault("max_new_tokens", 2)
        with pytest.raises(ValueError, match=match):
            generate_with_policy(tiny_qwen2, av_prompt, show_progress=False, **kwargs)
    with pytest.raises(ValueError, match="input_ids"):
        generate_with_policy(
            tiny_qwen2, torch.cat([av_prompt, av_prompt]), layout=av_layout, policy=snap, show_progress=False
        )
    assert tiny_qwen2.config._attn_implementation == "sdpa"  # restored after failures


def test_composed_policy_runs_the_prefill_attention(tiny_qwen2, av_prompt, av_layout) -> None:
    calls = []

    def dense_prefill(module, query, key, value, *, layout, scaling):
        calls.append((module.layer_idx, len(layout)))
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key.repeat_interleave(2, 1), value.repeat_interleave(2, 1), is_causal=True, scale=scaling
        )
        return out.transpose(1, 2).contiguous()

    base = SnapKV(budget=0.3, window=8)
    composed = ComposedPolicy(base=base, prefill=dense_prefill)
    assert composed.budget == 0.3
    got = generate_with_policy(
        tiny_qwen2, av_prompt, layout=av_layout, policy=composed, max_new_tokens=4, show_progress=False
    )
    want = generate_with_policy(
        tiny_qwen2, av_prompt, layout=av_layout, policy=base, max_new_tokens=4, show_progress=False
    )
    assert calls == [(0, 82), (1, 82), (2, 82)]
    assert got.tokens.tolist() == want.tokens.tolist()
    with pytest.raises(ValueError, match="base"):
        ComposedPolicy(base=None)


def test_vlm_full_budget_matches_hf_generate(vlm) -> None:
    model, ids, inputs, layout = vlm
    assert layout.counts()[Modality.IMAGE] == 4
    result = generate_with_policy(
        model,
        ids,
        layout=layout,
        policy=make_policy("madakv", budget=1.0),
        max_new_tokens=5,
        show_progress=False,
        **inputs,
    )
    expected = model.generate(
        input_ids=ids,
        mm_token_type_ids=layout.to_mm_token_type_ids(),
        max_new_tokens=5,
        do_sample=False,
        **inputs,
    )[0, ids.shape[1] :]
    assert result.tokens.tolist() == expected.tolist()


@pytest.mark.parametrize("name", ["flowmm", "madakv", "look_m", "snapkv"])
def test_vlm_compressed_decode_matches_reference_with_mrope_positions(vlm, name, reference_decoder) -> None:
    model, ids, inputs, layout = vlm
    length = ids.shape[1]
    model_inputs = {**inputs, "mm_token_type_ids": layout.to_mm_token_type_ids()}
    positions = prompt_position_ids(model, ids, length, model_inputs)
    next_position = int(positions.max()) + 1
    assert positions.shape == (3, 1, length) and next_position < length  # M-RoPE: not the token count
    policy = make_policy(name, budget=0.5, window=4)
    ours, tokens = [], []
    with torch.no_grad(), compress(model, policy, layout) as session:
        out = model(
            input_ids=ids,
            position_ids=positions,
            past_key_values=session.cache,
            use_cache=True,
            **model_inputs,
        )
        for step in range(3):
            tokens.append(int(out.logits[0, -1].argmax()))
            pos = torch.full((3, 1, 1), next_position + step)
            out = model(
                input_ids=torch.tensor([[tokens[-1]]]),
                position_ids=pos,
                past_key_values=session.cache,
                use_cache=True,
            )
            ours.append(out.logits[0, -1])
    assert session.report.prompt_tokens_per_modality["image"] == 4
    assert sum(session.report.kept_per_layer_head[0]) < 2 * length
    for got, want in zip(ours, reference_decoder(model, session.cache, tokens, next_position)):
        torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)
    result = generate_with_policy(
        model,
        ids,
        layout=layout,
        policy=policy,
        max_new_tokens=4,
        show_progress=False,
        return_logits=True,
        **inputs,
    )
    assert result.tokens.tolist() == tokens + [int(ours[-1].argmax())]
    torch.testing.assert_close(result.logits[1:], torch.stack(ours), atol=1e-4, rtol=1e-4)


def test_llama_and_context_cleanup(av_prompt, av_layout) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=1000,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ).eval()
    full = generate_with_policy(
        llama,
        av_prompt,
        layout=av_layout,
        policy=make_policy("adakv", budget=1.0),
        max_new_tokens=4,
        show_progress=False,
    )
    expected = llama.generate(av_prompt, max_new_tokens=4, do_sample=False)[0, av_prompt.shape[1] :]
    assert full.tokens.tolist() == expected.tolist()
    squeezed = generate_with_policy(
        llama,
        av_prompt,
        layout=av_layout,
        policy=make_policy("adakv", budget=0.25),
        max_new_tokens=2,
        show_progress=True,
    )
    assert squeezed.report.bytes_after < squeezed.report.bytes_before / 3
    report = squeezed.report.to_dict()
    assert report["kept_fraction"] == pytest.approx(0.25, abs=0.01) and report["policy"] == "adakv"
    attention = llama.model.layers[0].self_attn
    assert not attention._forward_hooks and llama.config._attn_implementation == "sdpa"


def test_purekv_composed_with_st_sparse_prefill(tiny_qwen2) -> None:
    from trillium.kvcompress import PureKV, STSparsePrefill
    from trillium.kvcompress.sparse_prefill import STSparseParams

    layout = TokenLayout.concat([TokenLayout.text(4), TokenLayout.video(6, 2, 4), TokenLayout.text(12)])
    ids = torch.randint(0, 1000, (1, len(layout)), generator=torch.Generator().manual_seed(3))
    base = PureKV(budget=0.3, window=8)
    dense = STSparsePrefill(STSparseParams(block_size=8, gamma=1.0, delta=2.0, backend="torch"))
    kwargs = {"layout": layout, "max_new_tokens": 3, "show_progress": False, "return_logits": True}
    alone = generate_with_policy(tiny_qwen2, ids, policy=base, **kwargs)
    composed = generate_with_policy(
        tiny_qwen2, ids, policy=ComposedPolicy(base=base, prefill=dense), **kwargs
    )
    assert len(dense.plans) == 3  # one plan per layer
    torch.testing.assert_close(composed.logits, alone.logits, atol=1e-4, rtol=1e-4)
    sparse = STSparsePrefill(STSparseParams(block_size=8, gamma=0.3, local_frames=0, backend="torch"))
    result = generate_with_policy(tiny_qwen2, ids, policy=ComposedPolicy(base=base, prefill=sparse), **kwargs)
    tiles = len(layout) // 8
    assert any(int(p.block_mask.sum()) < 2 * tiles * (tiles + 1) // 2 for p in sparse.plans)  # tiles skipped
    assert result.report.kept_per_layer_head == alone.report.kept_per_layer_head


def test_generation_result_times_prefill_and_decode(tiny_qwen2):
    from trillium.kvcompress import TokenLayout, generate_with_policy, make_policy

    model = tiny_qwen2
    ids = torch.randint(0, model.config.vocab_size, (1, 40), generator=torch.Generator().manual_seed(0))
    result = generate_with_policy(
        model,
        ids,
        layout=TokenLayout.text(40),
        policy=make_policy("snapkv", budget=0.5),
        max_new_tokens=5,
        show_progress=False,
    )
    assert len(result.tokens) == 5
    assert result.prefill_seconds > 0 and result.decode_seconds > 0
    assert result.decode_seconds_per_token == pytest.approx(result.decode_seconds / 4)


def test_streaming_callbacks_see_every_token_and_can_stop(tiny_qwen2, av_prompt, av_layout):
    """``on_prefill`` fires once before the first token with the report; ``on_token`` sees every
    token as it is chosen; returning False stops right after that token; without callbacks the
    output is unchanged."""
    from trillium.kvcompress import generate_with_policy, make_policy

    kwargs = {"layout": av_layout, "max_new_tokens": 6, "show_progress": False}
    plain = generate_with_policy(tiny_qwen2, av_prompt, policy=make_policy("snapkv", budget=0.3), **kwargs)
    events: list = []
    streamed = generate_with_policy(
        tiny_qwen2,
        av_prompt,
        policy=make_policy("snapkv", budget=0.3),
        on_prefill=lambda report, seconds: events.append(("prefill", report.prompt_length, seconds)),
        on_token=lambda token: events.append(("token", token)),
        **kwargs,
    )
    assert streamed.tokens.tolist() == plain.tokens.tolist()
    assert events[0][:2] == ("prefill", len(av_layout)) and events[0][2] > 0
    assert [e[1] for e in events[1:]] == plain.tokens.tolist()
    seen: list[int] = []
    stopped = generate_with_policy(
        tiny_qwen2,
        av_prompt,
        policy=make_policy("snapkv", budget=0.3),
        on_token=lambda token: seen.append(token) or len(seen) < 2,
        **kwargs,
    )
    assert stopped.tokens.tolist() == plain.tokens.tolist()[:2] == seen
    assert not stopped.stopped_by_eos


# ---------------------------------------------------------------- question-agnostic compression
CONTEXT = 72  # av_layout: text 6 + video 36 + audio 30 = context; the last 10 text tokens = question


def test_question_at_full_budget_equals_plain_generation_of_context_and_question(
    tiny_qwen2, av_prompt, av_layout
) -> None:
    """Budget 1.0 keeps every context entry, so context + question through the compressed cache must
    reproduce greedy generation over the whole prompt (tokens and logits)."""
    embeds = tiny_qwen2.get_input_embeddings()(av_prompt).detach()
    result = generate_with_policy(
        tiny_qwen2,
        inputs_embeds=embeds[:, :CONTEXT],
        question_embeds=embeds[:, CONTEXT:],
        layout=av_layout.select(range(CONTEXT)),
        policy=make_policy("adakv", budget=1.0),
        max_new_tokens=5,
        show_progress=False,
        return_logits=True,
    )
    expected = tiny_qwen2.generate(
        av_prompt, max_new_tokens=5, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    assert result.tokens.tolist() == expected.sequences[0, av_prompt.shape[1] :].tolist()
    torch.testing.assert_close(result.logits, torch.cat(expected.logits), atol=1e-4, rtol=1e-4)


def test_question_is_not_seen_by_the_policy_and_runs_through_the_compressed_cache(
    tiny_qwen2, av_prompt, av_layout, reference_decoder
) -> None:
    """The policy compresses the context only (report of 72 tokens, 20% of them kept); the question
    ids and every generated token are then fed through the kept context entries, matching a reference
    that feeds them one by one (positions 72, 73, ...) over a padded copy of the compressed cache."""
    context_layout = av_layout.select(range(CONTEXT))
    policy = make_policy("snapkv", budget=0.2, window=4)
    seen = []
    result = generate_with_policy(
        tiny_qwen2,
        av_prompt[:, :CONTEXT],
        question_ids=av_prompt[:, CONTEXT:],
        layout=context_layout,
        policy=policy,
        max_new_tokens=4,
        show_progress=False,
        return_logits=True,
        on_prefill=lambda report, seconds: seen.append((report.prompt_length, seconds)),
    )
    report = result.report
    assert report.prompt_length == CONTEXT and seen[0][0] == CONTEXT and seen[0][1] > 0
    assert report.prompt_tokens_per_modality == {"text": 6, "image": 0, "video": 36, "audio": 30}
    assert all(n == round(0.2 * CONTEXT) for layer in report.kept_per_layer_head for n in layer)
    with torch.no_grad(), compress(tiny_qwen2, policy, context_layout) as session:
        tiny_qwen2(input_ids=av_prompt[:, :CONTEXT], past_key_values=session.cache, use_cache=True)
    fed = av_prompt[0, CONTEXT:].tolist() + result.tokens.tolist()[:-1]
    reference = reference_decoder(tiny_qwen2, session.cache, fed, CONTEXT)
    torch.testing.assert_close(
        result.logits, torch.stack(reference[len(av_layout) - CONTEXT - 1 :]), atol=1e-4, rtol=1e-4
    )
    # The flaw this replaces: compressing the whole prompt leaves the first token's logits those of
    # full attention (the last prompt token's hidden state never reads the compressed cache).
    full = tiny_qwen2(av_prompt).logits[0, -1]
    whole = generate_with_policy(
        tiny_qwen2,
        av_prompt,
        layout=av_layout,
        policy=policy,
        max_new_tokens=1,
        show_progress=False,
        return_logits=True,
    )
    torch.testing.assert_close(whole.logits[0], full, atol=1e-4, rtol=1e-4)
    assert (result.logits[0] - full).abs().max() > 1e-2


def test_question_with_mrope_positions_matches_hf_generate(vlm) -> None:
    """Qwen2-VL / Qwen2.5-VL: the question's M-RoPE positions continue after the context's maximum."""
    model, ids, inputs, layout = vlm
    context = ids.shape[1] - 4
    result = generate_with_policy(
        model,
        ids[:, :context],
        question_ids=ids[:, context:],
        layout=layout.select(range(context)),
        policy=make_policy("snapkv", budget=1.0),
        max_new_tokens=4,
        show_progress=False,
        return_logits=True,
        **inputs,
    )
    expected = model.generate(
        input_ids=ids,
        mm_token_type_ids=layout.to_mm_token_type_ids(),
        max_new_tokens=4,
        do_sample=False,
        output_logits=True,
        return_dict_in_generate=True,
        **inputs,
    )
    assert result.tokens.tolist() == expected.sequences[0, ids.shape[1] :].tolist()
    torch.testing.assert_close(result.logits, torch.cat(expected.logits), atol=1e-4, rtol=1e-4)
    assert result.report.prompt_length == context


def test_bad_question_raises_value_error_naming_the_argument(tiny_qwen2, av_prompt, av_layout) -> None:
    context, question = av_prompt[:, :CONTEXT], av_prompt[:, CONTEXT:]
    embeds = tiny_qwen2.get_input_embeddings()(question).detach()
    cases = [
        ({"question_ids": question, "question_embeds": embeds}, "at most one of question_ids or"),
        ({"question_ids": question[0]}, r"question_ids must have batch size 1 and shape \[1, Q\]"),
        ({"question_ids": torch.cat([question, question])}, "question_ids must have batch size 1"),
        ({"question_ids": question[:, :0]}, "question_ids must hold at least one token"),
        ({"question_ids": question.float()}, "question_ids must hold integer token ids"),
        ({"question_embeds": embeds[0]}, r"question_embeds must have batch size 1 and shape \[1, Q, 128\]"),
        ({"question_embeds": embeds[..., :64]}, "question_embeds must have batch size 1"),
        ({"question_embeds": embeds[:, :0]}, "question_embeds must hold at least one token"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            generate_with_policy(
                tiny_qwen2,
                context,
                layout=av_layout.select(range(CONTEXT)),
                policy=make_policy("snapkv"),
                max_new_tokens=2,
                show_progress=False,
                **kwargs,
            )
    assert tiny_qwen2.config._attn_implementation == "sdpa"
