"""av-tiny decoder: save/load round trip, manual greedy decode, compressed generation, evaluation."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache, Qwen2ForCausalLM

from trillium.kvcompress import RandomEviction
from trillium.kvcompress.hf import generate_with_policy
from trillium.kvcompress.registry import make_policy
from trillium.models.av_tiny import (
    DecoderSize,
    build_model,
    evaluate,
    full_cache_generate_fn,
    load_av_tiny,
    policy_generate_fn,
    sample_inputs,
)
from trillium.models.av_tiny.model import embed_inputs, embed_inputs_reference
from trillium.models.av_tiny.processor import AVTinyProcessor
from trillium.models.avqa import AVQAConfig, make_sample

TINY = DecoderSize(hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64)
SAMPLE = make_sample(AVQAConfig(n_frames=4, frame_size=24, n_sound_events=2), 3)


@pytest.fixture(scope="module")
def model(processor: AVTinyProcessor) -> Qwen2ForCausalLM:
    return build_model(processor, TINY, seed=1).eval()


def test_save_load_gives_identical_logits(model, processor, tmp_path) -> None:
    model.save_pretrained(str(tmp_path))
    processor.save_pretrained(tmp_path)
    loaded, loaded_processor = load_av_tiny(tmp_path)
    auto = AutoModelForCausalLM.from_pretrained(str(tmp_path), local_files_only=True).eval()
    inputs = sample_inputs(loaded_processor, SAMPLE)
    with torch.no_grad():
        expected = model(inputs_embeds=embed_inputs(model, inputs.input_ids, inputs.aux_ids)).logits
        for other in (loaded, auto):
            embeds = embed_inputs(other, inputs.input_ids, inputs.aux_ids)
            assert torch.equal(other(inputs_embeds=embeds).logits, expected)
    assert isinstance(loaded, Qwen2ForCausalLM) and loaded.config.vocab_size == processor.vocab_size


def test_load_rejects_folder_without_model(tmp_path) -> None:
    with pytest.raises(ValueError, match="config.json"):
        load_av_tiny(tmp_path)


def test_manual_greedy_decode_matches_generate(model, processor) -> None:
    inputs = sample_inputs(processor, SAMPLE)
    ours = full_cache_generate_fn(model)(inputs, 4)
    reference = model.generate(
        inputs_embeds=embed_inputs(model, inputs.input_ids, inputs.aux_ids),
        max_new_tokens=4,
        do_sample=False,
        past_key_values=DynamicCache(config=model.config),
    )[0]
    eos = model.config.eos_token_id
    cut = (reference == eos).nonzero()
    reference = reference[: int(cut[0]) + 1] if len(cut) else reference
    assert torch.equal(ours, reference)


def test_policy_generate_fn_compresses_the_context_only(model, processor) -> None:
    inputs = sample_inputs(processor, SAMPLE)
    full = full_cache_generate_fn(model)(inputs, 3)
    for name in ("random", "snapkv"):
        assert torch.equal(policy_generate_fn(model, make_policy(name, budget=1.0))(inputs, 3), full)
    seen = []

    class Recording(RandomEviction):
        def begin(self, layout, num_layers):
            seen.append(len(layout))
            super().begin(layout, num_layers)

    tokens = policy_generate_fn(model, Recording(budget=0.1))(inputs, 3)
    assert set(seen) == {inputs.question_start} and 1 <= tokens.numel() <= 3  # the context only


def test_evaluate_counts_per_family_with_oracle_and_wrong_generate_fn(model, processor) -> None:
    samples = [make_sample(AVQAConfig(n_frames=4, frame_size=24, n_sound_events=2), s) for s in range(2)]
    answers = iter([q.answer for s in samples for q in s.questions])
    eos = processor.token_id("<eos>")

    def oracle(inputs, max_new_tokens):
        assert len(inputs.layout) == inputs.input_ids.shape[1] and max_new_tokens == 3
        return torch.tensor([*(processor.token_id(w) for w in next(answers)), eos])

    result = evaluate(model, processor, samples, generate_fn=oracle, progress=False)
    assert result.accuracy["overall"] == 1.0 and result.total["video_recall"] == 2
    wrong = evaluate(
        model, processor, samples, generate_fn=lambda inputs, n: torch.tensor([eos]), progress=False
    )
    assert wrong.accuracy["overall"] == 0.0 and set(wrong.accuracy) >= {"text", "counting"}
    with pytest.raises(ValueError, match="max_new_tokens"):
        evaluate(model, processor, samples, max_new_tokens=0)


def test_kvcompress_policy_runs_as_generate_fn(model, processor) -> None:
    def with_policy(name: str, budget: float):
        def generate(inputs, max_new_tokens):
            result = generate_with_policy(
                model,
                inputs_embeds=embed_inputs(model, inputs.input_ids, inputs.aux_ids),
                layout=inputs.layout,
                policy=make_policy(name, budget=budget),
                max_new_tokens=max_new_tokens,
                eos_token_id=model.config.eos_token_id,
                show_progress=False,
            )
            return torch.as_tensor(result.tokens)

        return generate

    inputs = sample_inputs(processor, SAMPLE)
    full = full_cache_generate_fn(model)(inputs, 3)
    assert torch.equal(with_policy("snapkv", 1.0)(inputs, 3), full)
    result = evaluate(model, processor, [SAMPLE], generate_fn=with_policy("acckv", 0.3), progress=False)
    assert sum(result.total.values()) == len(SAMPLE.questions)


def test_embed_inputs_adds_auxiliary_rows_and_matches_reference(model, processor) -> None:
    inputs = sample_inputs(processor, SAMPLE)
    fast = embed_inputs(model, inputs.input_ids, inputs.aux_ids)
    torch.testing.assert_close(fast, embed_inputs_reference(model, inputs.input_ids, inputs.aux_ids))
    table = model.get_input_embeddings().weight
    plain = inputs.aux_ids[0].lt(0).all(dim=1)
    assert plain.any() and (~plain).any()
    torch.testing.assert_close(fast[0, plain], table[inputs.input_ids[0, plain]])
    with pytest.raises(ValueError, match="aux_ids"):
        embed_inputs(model, inputs.input_ids, inputs.aux_ids[:, :-1])
