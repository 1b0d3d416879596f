"""One matrix runs every registered policy at several budgets through the same checks:
the cache really shrinks (exact bytes, within the budget), decode matches an independent reference
computed on the kept (and merged) entries, positions continue from the original prompt, and the
report agrees with the cache."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from trillium.kvcompress import compress, generate_with_policy, list_policies, make_policy
from trillium.kvcompress.budgets import resolve_budget

POLICY_NAMES = [spec.name for spec in list_policies()]
BUDGETS = [0.25, 0.5, 12]
DECODE_STEPS = 3


def _policy(name: str, budget: float | int):
    params = {"window": 8} if "window" in {p.name for p in _spec(name).parameters} else {}
    if name == "acckv":
        params["audio_steps_per_unit"] = 5
    return make_policy(name, budget=budget, **params)


def _spec(name: str):
    return next(s for s in list_policies() if s.name == name)


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("name", POLICY_NAMES)
def test_policy_matrix(  # noqa: PLR0917 (pytest fixtures)
    name, budget, tiny_qwen2, av_layout, av_prompt, reference_decoder
) -> None:
    model, length = tiny_qwen2, len(av_layout)
    config = model.config
    num_layers, num_kv, head_dim = config.num_hidden_layers, config.num_key_value_heads, 128 // 4
    policy = _policy(name, budget)
    n_keep = resolve_budget(budget, length)
    ours, tokens = [], []
    with torch.no_grad(), compress(model, policy, av_layout) as session:
        out = model(
            av_prompt, past_key_values=session.cache, use_cache=True, position_ids=torch.arange(length)[None]
        )
        report = session.report
        kept = session.cache.kept_per_layer_head()
        bytes_after_prefill = session.cache.nbytes()
        for step in range(DECODE_STEPS):
            tokens.append(int(out.logits[0, -1].argmax()))
            out = model(
                torch.tensor([[tokens[-1]]]),
                position_ids=torch.tensor([[length + step]]),
                past_key_values=session.cache,
                use_cache=True,
            )
            ours.append(out.logits[0, -1])
        assert session.cache.get_seq_length() == length + DECODE_STEPS
        assert all(layer.tail_length == DECODE_STEPS for layer in session.cache.layers)

    # the cache really shrinks: exact packed bytes, total entries within the budget, and the budget
    # is used (a policy that frees slots refills them: at least 95% of it is kept)
    entries = sum(sum(per_layer) for per_layer in kept)
    assert entries <= num_layers * num_kv * n_keep
    assert entries >= 0.95 * num_layers * num_kv * min(n_keep, length)
    assert all(n <= length for per_layer in kept for n in per_layer)
    ragged_layers = sum(len(set(per_layer)) > 1 for per_layer in kept)
    expected_bytes = entries * head_dim * 4 * 2 + ragged_layers * (num_kv + 1) * 8
    assert bytes_after_prefill == expected_bytes == report.bytes_after
    assert report.bytes_before == num_layers * 2 * num_kv * length * head_dim * 4
    assert report.bytes_after <= report.bytes_before * n_keep / length + num_layers * (num_kv + 1) * 8

    # the report agrees with the cache
    assert report.policy == name and report.prompt_length == length
    assert report.kept_per_layer_head == kept
    for layer_idx, per_layer in enumerate(report.kept_per_layer_modality):
        assert sum(per_layer.values()) == sum(kept[layer_idx])
    assert report.kept_fraction == pytest.approx(entries / (num_layers * num_kv * length))
    assert report.compress_seconds > 0

    # decode over the compressed cache equals the reference over the same entries
    reference = reference_decoder(model, session.cache, tokens, length)
    for got, want in zip(ours, reference):
        torch.testing.assert_close(got, want, atol=2e-4, rtol=2e-4)

    # generate_with_policy decodes the same greedy tokens (positions continue from the prompt)
    result = generate_with_policy(
        model,
        av_prompt,
        layout=av_layout,
        policy=policy,
        max_new_tokens=DECODE_STEPS + 1,
        show_progress=False,
        return_logits=True,
    )
    expected = tokens + [int(ours[-1].argmax())]
    assert result.tokens.tolist() == expected
    torch.testing.assert_close(result.logits[1:], torch.stack(ours), atol=1e-4, rtol=1e-4)
    assert result.report.kept_per_layer_head == kept


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_full_budget_is_lossless(name, tiny_qwen2, av_layout, av_prompt) -> None:
    length = len(av_layout)
    dense = DynamicCache()
    with torch.no_grad():
        out = tiny_qwen2(av_prompt, past_key_values=dense, use_cache=True)
        token = int(out.logits[0, -1].argmax())
        want = tiny_qwen2(torch.tensor([[token]]), past_key_values=dense, use_cache=True).logits[0, -1]
        with compress(tiny_qwen2, _policy(name, 1.0), av_layout) as session:
            tiny_qwen2(av_prompt, past_key_values=session.cache, use_cache=True)
            got = tiny_qwen2(
                torch.tensor([[token]]),
                position_ids=torch.tensor([[length]]),
                past_key_values=session.cache,
                use_cache=True,
            ).logits[0, -1]
    assert session.report.kept_per_layer_head == [[length, length]] * 3
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
