"""A bounded quality guard on the shipped av-tiny: every seed policy at a 40% budget answers a
fixed 30-question validation subset within 20 points of the full cache, in the question-agnostic
protocol (A) and the question-aware one (C) of ``make bench-kv``. A collapse like AccKV's old
calibration (48% at 40%, 0% cross-modal) fails here; the random-eviction floor stays far below,
so the task does discriminate. The figures the margin was set from (validation split, this
subset): full 96.7; A: AccKV 96.7, FlowMM 86.7, MadaKV 93.3, PureKV 86.7; C: 83.3, 86.7, 83.3,
90.0; random 46.7 / 43.3."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trillium.kvcompress import generate_with_policy, make_policy

REPO = Path(__file__).resolve().parents[2]
AV_TINY = REPO / "assets" / "models" / "av-tiny"
SEED_POLICIES = ("acckv", "flowmm", "madakv", "purekv")
MARGIN = 0.20
PER_FAMILY = 6


@pytest.fixture(scope="module")
def questions():
    from trillium.models.av_tiny.evaluate import sample_inputs
    from trillium.models.av_tiny.model import embed_inputs, load_av_tiny
    from trillium.models.avqa.dataset import validation_samples

    model, processor = load_av_tiny(AV_TINY)
    model.eval()
    out = []
    for sample in validation_samples(PER_FAMILY):
        inputs = sample_inputs(processor, sample, 0)
        with torch.no_grad():
            embeds = embed_inputs(model, inputs.input_ids, inputs.aux_ids)
        out.append((inputs, embeds, list(sample.questions[0].answer)))
    return model, processor, out


def _accuracy(model, processor, questions, policy, protocol: str) -> float:
    correct = 0
    for inputs, embeds, answer in questions:
        length = inputs.input_ids.shape[1]
        span = inputs.question_start if protocol == "A" else length - 1
        result = generate_with_policy(
            model,
            inputs_embeds=embeds[:, :span],
            question_embeds=embeds[:, span:],
            layout=inputs.layout.select(range(span)),
            policy=policy,
            max_new_tokens=3,
            eos_token_id=model.config.eos_token_id,
            show_progress=False,
        )
        correct += processor.decode(result.tokens) == answer
    return correct / len(questions)


@pytest.fixture(scope="module")
def full_accuracy(questions) -> float:
    model, processor, items = questions
    return _accuracy(model, processor, items, make_policy("streaming_llm", budget=1.0), "A")


@pytest.mark.parametrize("protocol", ["A", "C"])
@pytest.mark.parametrize("name", SEED_POLICIES)
def test_seed_policy_at_40_percent_stays_near_the_full_cache(
    questions, full_accuracy, name, protocol
) -> None:
    model, processor, items = questions
    assert full_accuracy >= 0.9  # the shipped model answers this subset
    accuracy = _accuracy(model, processor, items, make_policy(name, budget=0.4), protocol)
    assert accuracy >= full_accuracy - MARGIN, (
        f"{name} protocol {protocol}: {accuracy:.3f} vs {full_accuracy:.3f}"
    )


def test_random_eviction_falls_far_below_the_full_cache(questions, full_accuracy) -> None:
    model, processor, items = questions
    accuracy = _accuracy(model, processor, items, make_policy("random", budget=0.4), "A")
    assert accuracy <= full_accuracy - 0.3
