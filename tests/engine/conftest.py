"""Fixtures for the engine tests: tiny float64 decoders (so batched and alone runs agree to the
last bit of a greedy choice) and the reference each request is held to: kvcompress's own
single-request ``generate_with_policy`` on a copy of the same weights."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from trillium.kvcompress import TokenLayout
from trillium.kvcompress.hf import generate_with_policy
from trillium.kvcompress.registry import make_policy

torch.set_num_threads(1)

VOCAB = 211


@pytest.fixture(scope="session")
def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=96,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return LlamaForCausalLM(config).double().eval()


@pytest.fixture(scope="session")
def tiny_qwen2() -> Qwen2ForCausalLM:
    torch.manual_seed(1)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return Qwen2ForCausalLM(config).double().eval()


@pytest.fixture(scope="session")
def av_layout() -> TokenLayout:
    """text (6) + video (3 frames of 3x4) + audio (30 steps) + text (10): 82 tokens."""
    return TokenLayout.concat(
        [TokenLayout.text(6), TokenLayout.video(3, 3, 4), TokenLayout.audio(30), TokenLayout.text(10)]
    )


def alone(model, prompt_ids, layout, policy_name, budget, max_new_tokens, **sampling):  # noqa: PLR0917
    """Tokens of one request run by itself through kvcompress (a fresh copy of the model)."""
    twin = copy.deepcopy(model)
    policy = (
        make_policy(policy_name, budget=budget) if policy_name else make_policy("streaming_llm", budget=1.0)
    )
    result = generate_with_policy(
        twin,
        input_ids=prompt_ids.unsqueeze(0),
        layout=layout,
        policy=policy,
        max_new_tokens=max_new_tokens,
        show_progress=False,
        **sampling,
    )
    return result.tokens.tolist()


@pytest.fixture(scope="session")
def run_alone():
    return alone
