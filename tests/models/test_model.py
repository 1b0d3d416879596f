"""av-tiny decoder: save/load round trip, manual greedy decode, random eviction, evaluation."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache, Qwen2ForCausalLM

from trillium.kvcompress.hf import generate_with_policy
from trillium.kvcompress.registry import make_policy
from trillium.models.av_tiny import (
    DecoderSize,
    RandomEviction,
    build_model,
    evaluate,
    full_cache_generate_fn,
    load_av_tiny,
    random_eviction_generate_fn,
    sample_inputs,
)
from trillium.models.av_tiny.eviction import prune_cache, question_start
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
    ids = sample_inputs(loaded_processor, SAMPLE).input_ids
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        assert torch.equal(loaded(input_ids=ids).logits, expected)
        assert torch.equal(auto(input_ids=ids).logits, expected)
    assert isinstance(loaded, Qwen2ForCausalLM) and loaded.config.vocab_size == processor.vocab_size


def test_load_rejects_folder_without_model(tmp_path) -> None:
    with pytest.raises(ValueError, match="config.json"):
        load_av_tiny(tmp_path)


def test_manual_greedy_decode_matches_generate(model, processor) -> None:
    inputs = sample_inputs(processor, SAMPLE)
    ours = full_cache_generate_fn(model)(inputs.input_ids, inputs.layout, 4)
    reference = model.generate(
        inputs.input_ids, max_new_tokens=4, do_sample=False, past_key_values=DynamicCache(config=model.config)
    )[0, inputs.input_ids.shape[1] :]
    eos = model.config.eos_token_id
    cut = (reference == eos).nonzero()
    reference = reference[: int(cut[0]) + 1] if len(cut) else reference
    assert torch.equal(ours, reference)


def test_random_eviction_keeping_everything_equals_full_cache(model, processor) -> None:
    inputs = sample_inputs(processor, SAMPLE)
    full = full_cache_generate_fn(model)(inputs.input_ids, inputs.layout, 3)
    kept = random_eviction_generate_fn(model, RandomEviction(1.0))(inputs.input_ids, inputs.layout, 3)
    assert torch.equal(full, kept)


def test_prune_cache_keeps_requested_entries(model, processor) -> None:
    inputs = sample_inputs(processor, SAMPLE)
    start = question_start(inputs.layout)
    assert start == inputs.question_start
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=inputs.input_ids[:, :start], past_key_values=cache, use_cache=True)
    before = cache.layers[0].keys.clone()
    keep = torch.tensor([0, 5, start - 1])
    prune_cache(cache, keep)
    assert cache.get_seq_length() == 3
    assert torch.equal(cache.layers[0].keys, before[:, :, keep])


def test_evaluate_counts_per_family_with_oracle_and_wrong_generate_fn(model, processor) -> None:
    samples = [make_sample(AVQAConfig(n_frames=4, frame_size=24, n_sound_events=2), s) for s in range(2)]
    answers = iter([q.answer for s in samples for q in s.questions])
    eos = processor.token_id("<eos>")

    def oracle(input_ids, layout, max_new_tokens):
        assert len(layout) == input_ids.shape[1] and max_new_tokens == 3
        return torch.tensor([*(processor.token_id(w) for w in next(answers)), eos])

    result = evaluate(model, processor, samples, generate_fn=oracle, progress=False)
    assert result.accuracy["overall"] == 1.0 and result.total["video_recall"] == 2
    wrong = evaluate(
        model, processor, samples, generate_fn=lambda i, l, n: torch.tensor([eos]), progress=False
    )
    assert wrong.accuracy["overall"] == 0.0 and set(wrong.accuracy) >= {"text", "counting"}
    with pytest.raises(ValueError, match="max_new_tokens"):
        evaluate(model, processor, samples, max_new_tokens=0)
    with pytest.raises(ValueError, match="keep_fraction"):
        RandomEviction(0.0)


def test_kvcompress_policy_runs_as_generate_fn(model, processor) -> None:
    def with_policy(name: str, budget: float):
        def generate(input_ids, layout, max_new_tokens):
            result = generate_with_policy(
                model,
                input_ids,
                layout=layout,
                policy=make_policy(name, budget=budget),
                max_new_tokens=max_new_tokens,
                eos_token_id=model.config.eos_token_id,
                show_progress=False,
            )
            return torch.as_tensor(result.tokens)

        return generate

    inputs = sample_inputs(processor, SAMPLE)
    full = full_cache_generate_fn(model)(inputs.input_ids, inputs.layout, 3)
    assert torch.equal(with_policy("snapkv", 1.0)(inputs.input_ids, inputs.layout, 3), full)
    result = evaluate(model, processor, [SAMPLE], generate_fn=with_policy("acckv", 0.3), progress=False)
    assert sum(result.total.values()) == len(SAMPLE.questions)
