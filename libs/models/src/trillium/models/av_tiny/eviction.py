"""Random eviction: the floor any KV-compression policy must beat.

Protocol (as in kvpress's question-agnostic setting): prefill the context (everything before the
question segment), keep a uniformly random ``keep_fraction`` of its KV entries per layer (the same
tokens in every layer and head), then run the question and decode greedily with position ids that
continue from the original, uncompressed positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from trillium.kvcompress.layout import TokenLayout
from trillium.models.av_tiny.evaluate import GenerateFn, greedy_decode
from trillium.models.av_tiny.model import embed_inputs
from trillium.models.av_tiny.processor import AVInputs


@dataclass(frozen=True)
class RandomEviction:
    """Keep a random ``keep_fraction`` of the context KV (at least one token)."""

    keep_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must lie in (0, 1], got {self.keep_fraction}")


def question_start(layout: TokenLayout) -> int:
    """Index of the first token of the last segment (the question)."""
    last = int(layout.segment.max())
    return int((layout.segment == last).nonzero()[0])


def prune_cache(cache: DynamicCache, keep: torch.Tensor) -> None:
    """Keep only sequence indices ``keep [n]`` in every layer of ``cache`` (by assignment)."""
    for layer in cache.layers:
        layer.keys = layer.keys[:, :, keep]
        layer.values = layer.values[:, :, keep]


def random_eviction_generate_fn(model: PreTrainedModel, policy: RandomEviction) -> GenerateFn:
    """A :data:`GenerateFn` that applies :class:`RandomEviction` to the context before the question."""
    generator = torch.Generator().manual_seed(policy.seed)

    @torch.no_grad()
    def generate(inputs: AVInputs, max_new_tokens: int) -> torch.Tensor:
        input_ids = inputs.input_ids
        start = question_start(inputs.layout)
        embeds = embed_inputs(model, input_ids, inputs.aux_ids)
        cache = DynamicCache(config=model.config)
        model(inputs_embeds=embeds[:, :start], past_key_values=cache, use_cache=True)
        n_keep = max(1, int(round(start * policy.keep_fraction)))
        keep = torch.randperm(start, generator=generator)[:n_keep].sort().values
        prune_cache(cache, keep)
        positions = torch.arange(start, input_ids.shape[1]).unsqueeze(0)
        result = model(
            inputs_embeds=embeds[:, start:], position_ids=positions, past_key_values=cache, use_cache=True
        )
        eos = model.config.eos_token_id
        return greedy_decode(
            model,
            cache,
            result.logits[0, -1],
            next_position=input_ids.shape[1],
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
        )

    return generate
