"""Accuracy of av-tiny on AVQA-synth samples, per question family.

The default decode is greedy with the full KV cache. A benchmark passes its own ``generate_fn``
(prefill + compression + decode) to measure accuracy under compression.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, PreTrainedModel

from trillium.models.av_tiny.model import embed_inputs
from trillium.models.av_tiny.processor import AVInputs, AVTinyProcessor
from trillium.models.avqa import FAMILIES, Sample

GenerateFn = Callable[[AVInputs, int], torch.Tensor]
"""``generate_fn(inputs, max_new_tokens) -> new token ids [n]``. The prompt enters the model as
``embed_inputs(model, inputs.input_ids, inputs.aux_ids)``; the question is the last layout segment
(the tokens from ``<question>`` to the closing ``<answer>``)."""


@dataclass
class EvalResult:
    """Accuracy per family (exact match of all answer words) with counts."""

    correct: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)

    def add(self, family: str, ok: bool) -> None:
        self.correct[family] = self.correct.get(family, 0) + int(ok)
        self.total[family] = self.total.get(family, 0) + 1

    @property
    def accuracy(self) -> dict[str, float]:
        """Accuracy per family present, plus ``"overall"`` (micro average)."""
        out = {f: self.correct[f] / self.total[f] for f in FAMILIES if self.total.get(f)}
        n = sum(self.total.values())
        out["overall"] = sum(self.correct.values()) / n if n else 0.0
        return out


def sample_inputs(processor: AVTinyProcessor, sample: Sample, question_index: int = 0) -> AVInputs:
    """Processor inputs of one question of ``sample``."""
    return processor(
        text=sample.text,
        frames=sample.frames,
        audio=sample.audio,
        sample_rate=sample.sample_rate,
        question=sample.questions[question_index].text,
        first_timestamp=sample.scene.first_step,
    )


@torch.no_grad()
def greedy_decode(
    model: PreTrainedModel,
    cache: DynamicCache,
    next_logits: torch.Tensor,
    *,
    next_position: int,
    max_new_tokens: int,
    eos_token_id: int,
) -> torch.Tensor:
    """Greedy decode from a (possibly compressed) ``cache`` with explicit positions.

    Args:
        next_logits: ``[V]`` logits of the last processed token.
        next_position: position id of the first generated token (the original prompt length, not
            the cache length, so pruned caches keep their RoPE positions).
    Returns:
        ``[n]`` generated ids, ``n <= max_new_tokens``, ending at ``eos_token_id`` if produced.
    """
    out = []
    token = int(next_logits.argmax())
    for step in range(max_new_tokens):
        out.append(token)
        if token == eos_token_id or step == max_new_tokens - 1:
            break
        result = model(
            input_ids=torch.tensor([[token]]),
            position_ids=torch.tensor([[next_position + step]]),
            past_key_values=cache,
            use_cache=True,
        )
        token = int(result.logits[0, -1].argmax())
    return torch.tensor(out, dtype=torch.long)


def full_cache_generate_fn(model: PreTrainedModel) -> GenerateFn:
    """Greedy decoding with the full KV cache (the uncompressed baseline)."""

    @torch.no_grad()
    def generate(inputs: AVInputs, max_new_tokens: int) -> torch.Tensor:
        cache = DynamicCache(config=model.config)
        embeds = embed_inputs(model, inputs.input_ids, inputs.aux_ids)
        result = model(inputs_embeds=embeds, past_key_values=cache, use_cache=True, logits_to_keep=1)
        eos = model.config.eos_token_id
        return greedy_decode(
            model,
            cache,
            result.logits[0, -1],
            next_position=inputs.input_ids.shape[1],
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
        )

    return generate


def evaluate(
    model: PreTrainedModel,
    processor: AVTinyProcessor,
    samples: Sequence[Sample],
    *,
    generate_fn: GenerateFn | None = None,
    max_new_tokens: int = 3,
    progress: bool = True,
) -> EvalResult:
    """Accuracy per family of ``model`` on every question of ``samples``.

    A question counts as correct when the decoded words up to ``<eos>`` equal its answer words.
    ``generate_fn`` defaults to :func:`full_cache_generate_fn`.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    generate_fn = generate_fn or full_cache_generate_fn(model)
    result = EvalResult()
    jobs = [(s, i) for s in samples for i in range(len(s.questions))]
    for sample, index in tqdm(jobs, desc="evaluate", disable=not progress, leave=False):
        inputs = sample_inputs(processor, sample, index)
        generated = generate_fn(inputs, max_new_tokens)
        question = sample.questions[index]
        result.add(question.family, processor.decode(generated) == list(question.answer))
    return result
