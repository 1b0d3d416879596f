"""Shared fixtures for the kvcompress tests: tiny models built from config, layouts, fake layer
inputs and an independent reference decoder (padded per-head DynamicCache + explicit masks)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AttentionInterface, DynamicCache, Qwen2Config, Qwen2ForCausalLM

from trillium.kvcompress import TokenLayout
from trillium.kvcompress.cache import CompressedCache
from trillium.kvcompress.policies.base import LayerInputs

torch.set_num_threads(1)

REFERENCE_ATTENTION = "kvcompress_test_reference"
_REFERENCE_VALID: dict[int, torch.Tensor] = {}


def _reference_attention(  # noqa: PLR0917 (transformers calls attention functions positionally)
    module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs
):
    """Float64 attention over a per-layer padded cache; ``_REFERENCE_VALID[layer]`` ``[H_kv, M]`` marks
    the real prompt entries, every later (decoded) key is valid; causal among new queries."""
    valid = _REFERENCE_VALID[module.layer_idx]
    group = query.shape[1] // key.shape[1]
    total, q_len = key.shape[2], query.shape[2]
    prefix = valid.shape[1]
    mask = torch.ones(key.shape[1], q_len, total, dtype=torch.bool)
    mask[:, :, :prefix] &= valid.unsqueeze(1)
    causal = torch.arange(total).unsqueeze(0) <= torch.arange(total - q_len, total).unsqueeze(1)
    mask &= causal.unsqueeze(0)
    mask = mask.repeat_interleave(group, dim=0).unsqueeze(0)
    k = key.double().repeat_interleave(group, dim=1)
    v = value.double().repeat_interleave(group, dim=1)
    scores = (query.double() @ k.transpose(-1, -2)) * scaling
    probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return (probs @ v).to(query.dtype).transpose(1, 2).contiguous(), None


AttentionInterface.register(REFERENCE_ATTENTION, _reference_attention)


def padded_reference_cache(cache: CompressedCache) -> DynamicCache:
    """A DynamicCache holding, per layer, every head's kept entries padded to the layer's longest
    head (zeros), and the validity masks the reference attention uses."""
    layers = []
    for idx, layer in enumerate(cache.layers):
        counts = layer.kept_per_head()
        longest = max(counts)
        first_k, first_v = layer.dense_prefix(0)
        keys = torch.zeros(1, len(counts), longest, first_k.shape[-1])
        values = torch.zeros(1, len(counts), longest, first_v.shape[-1])
        valid = torch.zeros(len(counts), longest, dtype=torch.bool)
        for h, n in enumerate(counts):
            k, v = layer.dense_prefix(h)
            keys[0, h, :n], values[0, h, :n], valid[h, :n] = k, v, True
        layers.append((keys, values))
        _REFERENCE_VALID[idx] = valid
    return DynamicCache(layers)


@torch.no_grad()
def reference_decode_logits(
    model: nn.Module, cache: CompressedCache, tokens: list[int], first_position: int
) -> list[torch.Tensor]:
    """Logits after feeding ``tokens`` one by one (positions ``first_position + i``) through the
    model with the reference attention over the kept entries."""
    ref_cache = padded_reference_cache(cache)
    attn_config = _text_config(model)
    previous = attn_config._attn_implementation
    attn_config._attn_implementation = REFERENCE_ATTENTION
    out = []
    try:
        for i, token in enumerate(tokens):
            position = torch.tensor([[first_position + i]])
            if getattr(model.config, "text_config", None) is not None:
                position = position.view(1, 1, 1).expand(3, 1, 1)
            logits = model(
                input_ids=torch.tensor([[token]]),
                position_ids=position,
                past_key_values=ref_cache,
                use_cache=True,
            ).logits[0, -1]
            out.append(logits)
    finally:
        attn_config._attn_implementation = previous
    return out


def _text_config(model: nn.Module):
    from trillium.kvcompress.hf import decoder_layers

    return decoder_layers(model)[0].self_attn.config


@pytest.fixture(scope="session")
def tiny_qwen2() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=1000,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return Qwen2ForCausalLM(config).eval()


@pytest.fixture(scope="session")
def av_layout() -> TokenLayout:
    """text (6) + video (3 frames of 3x4) + audio (30 steps) + text (10): 82 tokens."""
    return TokenLayout.concat(
        [TokenLayout.text(6), TokenLayout.video(3, 3, 4), TokenLayout.audio(30), TokenLayout.text(10)]
    )


@pytest.fixture(scope="session")
def av_prompt(av_layout: TokenLayout) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 1000, (1, len(av_layout)), generator=generator)


class FakeAttention(nn.Module):
    """An attention module whose queries are its input (identity ``q_proj``) — lets tests plant
    queries exactly. Position embeddings passed with it must be ``cos = 1, sin = 0``."""

    def __init__(self, num_q_heads: int, head_dim: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.scaling = head_dim**-0.5
        self.q_proj = nn.Linear(num_q_heads * head_dim, num_q_heads * head_dim, bias=False)
        with torch.no_grad():
            self.q_proj.weight.copy_(torch.eye(num_q_heads * head_dim))


def make_inputs(
    queries: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    layout: TokenLayout,
    *,
    layer_idx: int = 0,
    num_layers: int = 1,
    state: dict | None = None,
) -> LayerInputs:
    """``LayerInputs`` whose recomputed queries are ``queries`` ``[H_q, L, D]`` exactly."""
    num_q_heads, length, dim = queries.shape
    hidden = queries.transpose(0, 1).reshape(1, length, num_q_heads * dim)
    cos, sin = torch.ones(1, length, dim), torch.zeros(1, length, dim)
    return LayerInputs(
        layer_idx=layer_idx,
        num_layers=num_layers,
        keys=keys,
        values=values,
        layout=layout,
        attention=FakeAttention(num_q_heads, dim),
        hidden_states=hidden,
        position_embeddings=(cos, sin),
        state=state if state is not None else {},
    )


@pytest.fixture(scope="session")
def layer_inputs_factory():
    """``make_inputs`` as a fixture (test modules cannot import conftest under importlib mode)."""
    return make_inputs


@pytest.fixture(scope="session")
def reference_decoder():
    """``reference_decode_logits`` as a fixture."""
    return reference_decode_logits
