"""av-tiny generation under a kvcompress policy, in the question-agnostic protocol.

Protocol (kvpress's question-agnostic setting): prefill the context (everything before the question
segment) and compress it with the policy, which never sees the question; then run the question
through the compressed cache and decode greedily, positions continuing from the original,
uncompressed prompt. The random-eviction floor is the kvcompress policy ``random``.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from trillium.kvcompress import Policy, generate_with_policy
from trillium.models.av_tiny.evaluate import GenerateFn
from trillium.models.av_tiny.model import embed_inputs
from trillium.models.av_tiny.processor import AVInputs


def policy_generate_fn(model: PreTrainedModel, policy: Policy) -> GenerateFn:
    """A :data:`GenerateFn` that compresses the context with ``policy`` before the question."""

    @torch.no_grad()
    def generate(inputs: AVInputs, max_new_tokens: int) -> torch.Tensor:
        start = inputs.question_start
        embeds = embed_inputs(model, inputs.input_ids, inputs.aux_ids)
        result = generate_with_policy(
            model,
            inputs_embeds=embeds[:, :start],
            question_embeds=embeds[:, start:],
            layout=inputs.layout.select(range(start)),
            policy=policy,
            max_new_tokens=max_new_tokens,
            eos_token_id=model.config.eos_token_id,
            show_progress=False,
        )
        return result.tokens

    return generate
