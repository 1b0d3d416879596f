"""Hugging Face integration: compress a decoder's KV cache during prefill, then decode from it.

Works with the Qwen2 / Llama family and with the language model inside Qwen2-VL / Qwen2.5-VL
(``model.model.language_model``). Batch size 1.

* :func:`compress` is a context manager: inside it the decoder's attention runs through our
  registered attention function (``transformers.AttentionInterface``, name :data:`ATTENTION_NAME`),
  and a forward hook on every attention module hands the layer's freshly prefilled keys/values to
  the policy, which replaces them by the compressed entries **before the next layer runs**
  (peak memory: one dense layer plus the compressed ones). Pass ``session.cache`` as
  ``past_key_values``; prefill must be one forward pass over the whole prompt.
* :func:`generate_with_policy` does prefill + step-by-step decoding with explicit ``position_ids``
  continuing from the original prompt positions (or the M-RoPE maximum + 1 for Qwen2-VL), since
  ``model.generate`` mis-slices a pruned cache. Given a ``question_ids`` / ``question_embeds``, it
  runs question-agnostic compression as kvpress's pipeline does (NVIDIA kvpress, "context" then
  "question"): the prompt (the context) is compressed without the policy ever seeing the question,
  then the question is fed through the compressed cache, so the cache could be reused for other
  questions.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from trillium.kvcompress.cache import CompressedCache
from trillium.kvcompress.layout import Modality, TokenLayout
from trillium.kvcompress.policies.base import LayerInputs, LayerResult, Policy
from trillium.kvcompress.report import CompressionReport, GenerationResult

__all__ = [
    "ATTENTION_NAME",
    "CompressionSession",
    "choose_token",
    "compress",
    "decoder_layers",
    "generate_with_policy",
]

ATTENTION_NAME = "trillium_kvcompress"
_ACTIVE: ContextVar[CompressionSession | None] = ContextVar("trillium_kvcompress_session", default=None)


def _eager_causal(
    module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense causal attention that also returns the probabilities ``[B, H_q, L, L]`` (for H2O)."""
    group = query.shape[1] // key.shape[1]
    k = key.repeat_interleave(group, dim=1)
    v = value.repeat_interleave(group, dim=1)
    scores = torch.matmul(query.float(), k.float().transpose(-1, -2)) * scaling
    length_q, length_k = query.shape[2], key.shape[2]
    causal = torch.ones(length_q, length_k, dtype=torch.bool).tril(length_k - length_q)
    probs = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
    out = torch.matmul(probs.to(v.dtype), v)
    return out.transpose(1, 2).contiguous(), probs


def _attention_forward(  # noqa: PLR0917 (transformers calls attention functions positionally)
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention interface entry: compressed layers -> varlen decode; prefill -> SDPA, eager
    (policy needs weights) or the policy's prefill attention."""
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    session = _ACTIVE.get()
    if session is not None and session.cache.layers[module.layer_idx].is_compressed:
        out = session.cache.layers[module.layer_idx].attend(query, scale)
        return out.transpose(1, 2).contiguous(), None
    if session is not None and query.shape[2] > 1:
        if session.policy.needs_attention_weights:
            return _eager_causal(module, query, key, value, scale)
        prefill = session.policy.prefill_attention
        if prefill is not None:
            return prefill(module, query, key, value, layout=session.layout, scaling=scale), None
    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scale, **kwargs
    )


AttentionInterface.register(ATTENTION_NAME, _attention_forward)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a causal LM or of the language model inside a VLM."""
    for path in ("model.language_model", "language_model", "model", ""):
        obj: Any = model
        for part in filter(None, path.split(".")):
            obj = getattr(obj, part, None)
        if obj is not None and isinstance(getattr(obj, "layers", None), nn.ModuleList):
            return obj.layers
    raise ValueError(
        "model has no decoder layers (expected model.model.layers or model.model.language_model)"
    )


@dataclass
class CompressionSession:
    """State of one :func:`compress` context: the cache to pass as ``past_key_values`` and the report."""

    policy: Policy
    layout: TokenLayout
    cache: CompressedCache
    num_layers: int
    show_progress: bool = False
    report: CompressionReport | None = None
    state: dict[str, Any] = field(default_factory=dict)
    _progress: Any = None
    _device_layout: TokenLayout | None = None

    def on_layer_prefilled(
        self,
        attention: nn.Module,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_weights: torch.Tensor | None,
    ) -> None:
        layer_idx = attention.layer_idx
        layer = self.cache.layers[layer_idx]
        keys, values = layer.keys, layer.values
        if keys.shape[0] != 1:
            raise ValueError(f"batch size must be 1, got {keys.shape[0]}")
        result = self.compress_layer(
            LayerInputs(
                layer_idx=layer_idx,
                num_layers=self.num_layers,
                keys=keys[0],
                values=values[0],
                layout=self.layout,
                attention=attention,
                hidden_states=hidden_states,
                position_embeddings=position_embeddings,
                attention_weights=None if attention_weights is None else attention_weights[0],
                state=self.state,
            )
        )
        layer.load_compressed(result.keys, result.values, prompt_length=keys.shape[2])
        if all(layer.is_compressed for layer in self.cache.layers):
            self.finish(self.cache.nbytes())

    def compress_layer(self, inputs: LayerInputs) -> LayerResult:
        """Run the policy on one layer's prefilled ``inputs`` (layer 0 first) and record the result.

        The cache is not touched: :meth:`on_layer_prefilled` loads the result into its
        ``CompressedCache``; the serving engine (``trillium.engine``) loads it into its own
        per-sequence storage. ``inputs.layout`` is replaced by the session's layout on the keys'
        device; ``inputs.state`` by the session's cross-layer state.
        """
        keys, values = inputs.keys, inputs.values
        length = keys.shape[1]
        if inputs.layer_idx == 0 or self.report is None:
            self._start(length, keys.unsqueeze(0), values.unsqueeze(0))
        started = time.perf_counter()
        device = keys.device
        if self._device_layout is None or self._device_layout.modality.device != device:
            self._device_layout = self.layout.to(device)
        inputs.layout, inputs.state = self._device_layout, self.state
        # factory calls inside policies (torch.zeros, arange...) follow the cache's device; on the CPU
        # they already do, and the device context's per-call dispatch cost 20% of FlowMM's time at 8k
        placement = torch.device(device) if device.type != "cpu" else contextlib.nullcontext()
        with torch.no_grad(), placement:
            if self.policy.tokens_to_keep(length) >= length:
                result = LayerResult.select(keys, values, torch.arange(length).expand(keys.shape[0], -1))
            else:
                result = self.policy.compress_layer(inputs)
        self.report.compress_seconds += time.perf_counter() - started
        self._record(inputs.layer_idx, result)
        return result

    def finish(self, bytes_after: int) -> None:
        """Every layer is compressed: record the cache's exact bytes and close the progress bar."""
        self.report.bytes_after = bytes_after
        if self._progress is not None:
            self._progress.close()

    def _start(self, length: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.layout.check_length(length)
        self.state.clear()
        self.policy.begin(self.layout, self.num_layers)
        self.report = CompressionReport(
            policy=self.policy.name,
            prompt_length=length,
            prompt_tokens_per_modality={m.label: n for m, n in self.layout.counts().items()},
            bytes_before=self.num_layers
            * (keys.numel() * keys.element_size() + values.numel() * values.element_size()),
        )
        self.report.kept_per_layer_head = [[] for _ in range(self.num_layers)]
        self.report.kept_per_layer_modality = [{} for _ in range(self.num_layers)]
        self.report.merged_per_layer = [0] * self.num_layers
        if self.show_progress:
            self._progress = tqdm(total=self.num_layers, desc=f"compress[{self.policy.name}]", leave=False)

    def _record(self, layer_idx: int, result: Any) -> None:
        report = self.report
        report.kept_per_layer_head[layer_idx] = result.counts()
        modalities = torch.cat(result.sources).cpu()
        per_modality = torch.bincount(self.layout.modality[modalities], minlength=len(Modality))
        report.kept_per_layer_modality[layer_idx] = {m.label: int(per_modality[int(m)]) for m in Modality}
        report.merged_per_layer[layer_idx] = int(sum(int(m.sum()) for m in result.merged))
        if self._progress is not None:
            self._progress.update(1)


@contextlib.contextmanager
def compress(
    model: nn.Module, policy: Policy, layout: TokenLayout, *, show_progress: bool = False
) -> Iterator[CompressionSession]:
    """Apply ``policy`` to ``model``'s KV cache during the next prefill.

    Usage::

        with compress(model, SnapKV(budget=0.2), layout) as session:
            out = model(input_ids, past_key_values=session.cache, use_cache=True)
            # decode with explicit position_ids continuing from the original prompt length
    """
    if not isinstance(policy, Policy):
        raise ValueError(f"policy must be a Policy, got {type(policy).__name__}")
    if not isinstance(layout, TokenLayout):
        raise ValueError(f"layout must be a TokenLayout, got {type(layout).__name__}")
    layers = decoder_layers(model)
    policy.begin(layout, len(layers))  # fail on a bad layout before any model work
    attentions = [layer.self_attn for layer in layers]
    config = attentions[0].config
    session = CompressionSession(
        policy=policy,
        layout=layout,
        cache=CompressedCache(len(layers)),
        num_layers=len(layers),
        show_progress=show_progress,
    )

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        layer = session.cache.layers[module.layer_idx]
        if layer.is_compressed or not layer.is_initialized:
            return
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        if hidden.shape[1] != layer.keys.shape[2]:
            raise ValueError("prefill must process the whole prompt in one forward pass")
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        session.on_layer_prefilled(module, hidden, kwargs["position_embeddings"], weights)

    previous = config._attn_implementation
    handles = [attn.register_forward_hook(hook, with_kwargs=True) for attn in attentions]
    token = _ACTIVE.set(session)
    config._attn_implementation = ATTENTION_NAME
    try:
        yield session
    finally:
        config._attn_implementation = previous
        _ACTIVE.reset(token)
        for handle in handles:
            handle.remove()


def prompt_position_ids(
    model: nn.Module, input_ids: torch.Tensor | None, length: int, model_inputs: dict[str, Any]
) -> torch.Tensor:
    """Prompt positions: ``[1, L]``, or ``[3, 1, L]`` M-RoPE ids for Qwen2-VL-style models with
    image/video inputs (from the model's own ``get_rope_index``)."""
    inner = getattr(model, "model", None)
    has_grid = (
        model_inputs.get("image_grid_thw") is not None or model_inputs.get("video_grid_thw") is not None
    )
    if has_grid and input_ids is not None and hasattr(inner, "get_rope_index"):
        grid_kwargs = {
            k: model_inputs[k]
            for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")
            if model_inputs.get(k) is not None
        }
        positions, _ = inner.get_rope_index(
            input_ids, mm_token_type_ids=model_inputs["mm_token_type_ids"], **grid_kwargs
        )
        return positions
    return torch.arange(length).unsqueeze(0)


def _next_positions(prompt_positions: torch.Tensor, offset: int, count: int) -> torch.Tensor:
    start = int(prompt_positions.max()) + 1 + offset
    steps = torch.arange(start, start + count, device=prompt_positions.device)
    if prompt_positions.ndim == 3:
        return steps.view(1, 1, -1).expand(prompt_positions.shape[0], 1, -1)
    return steps.unsqueeze(0)


def choose_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    """Greedy for ``temperature == 0``; else nucleus sampling over ``softmax(logits / T)``."""
    if temperature == 0.0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        outside = sorted_probs.cumsum(0) - sorted_probs >= top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


def _check_generation_args(
    input_ids: torch.Tensor | None,
    inputs_embeds: torch.Tensor | None,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
) -> torch.Tensor:
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids or inputs_embeds")
    prompt = input_ids if input_ids is not None else inputs_embeds
    name = "input_ids" if input_ids is not None else "inputs_embeds"
    if prompt.ndim != (2 if input_ids is not None else 3) or prompt.shape[0] != 1:
        raise ValueError(
            f"{name} must have batch size 1 and shape [1, L{'' if input_ids is not None else ', H'}]"
        )
    if prompt.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one token")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if not temperature >= 0.0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
    return prompt


def _check_question(
    model: nn.Module,
    question_ids: torch.Tensor | None,
    question_embeds: torch.Tensor | None,
    prompt: torch.Tensor,
) -> torch.Tensor | None:
    """Validate the optional question (``[1, Q]`` ids or ``[1, Q, hidden]`` embeddings, ``Q >= 1``)."""
    if question_ids is not None and question_embeds is not None:
        raise ValueError("pass at most one of question_ids or question_embeds")
    if question_ids is not None:
        if not isinstance(question_ids, torch.Tensor) or question_ids.ndim != 2 or question_ids.shape[0] != 1:
            raise ValueError("question_ids must have batch size 1 and shape [1, Q]")
        if question_ids.dtype.is_floating_point or question_ids.dtype == torch.bool:
            raise ValueError(f"question_ids must hold integer token ids, got dtype {question_ids.dtype}")
        question, name = question_ids, "question_ids"
    elif question_embeds is not None:
        hidden = prompt.shape[-1] if prompt.ndim == 3 else model.get_input_embeddings().weight.shape[-1]
        if (
            not isinstance(question_embeds, torch.Tensor)
            or question_embeds.ndim != 3
            or question_embeds.shape[0] != 1
            or question_embeds.shape[2] != hidden
        ):
            shape = tuple(question_embeds.shape) if isinstance(question_embeds, torch.Tensor) else None
            raise ValueError(
                f"question_embeds must have batch size 1 and shape [1, Q, {hidden}], got {shape}"
            )
        question, name = question_embeds, "question_embeds"
    else:
        return None
    if question.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one token (Q >= 1)")
    return question


@torch.no_grad()
def generate_with_policy(
    model: nn.Module,
    input_ids: torch.Tensor | None = None,
    *,
    layout: TokenLayout,
    policy: Policy,
    max_new_tokens: int = 32,
    inputs_embeds: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
    eos_token_id: int | list[int] | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    show_progress: bool = True,
    return_logits: bool = False,
    on_prefill: Callable[[CompressionReport, float], None] | None = None,
    on_token: Callable[[int], bool | None] | None = None,
    question_ids: torch.Tensor | None = None,
    question_embeds: torch.Tensor | None = None,
    **model_inputs: Any,
) -> GenerationResult:
    """Prefill with ``policy`` compressing the cache, then decode up to ``max_new_tokens`` tokens.

    Without a question the whole prompt is compressed right after its prefill and the first token
    comes from the prompt's last logits (whose hidden state saw the full, uncompressed prompt).

    With ``question_ids`` or ``question_embeds`` (question-agnostic compression, as in kvpress's
    pipeline: the compressed cache can be reused for other questions): the prompt is the *context*;
    it is prefilled and compressed exactly as above, the policy never sees the question. The ``Q``
    question tokens then go through the compressed cache in one forward (not compressed; causal among
    themselves; positions continuing after the prompt's largest position), the first token comes from
    the question's last logits, and decode positions continue after the question.

    Args:
        model: a causal LM (Qwen2/Llama family) or a Qwen2-VL / Qwen2.5-VL model.
        input_ids: ``[1, L]`` prompt ids, or None when ``inputs_embeds`` ``[1, L, hidden]`` is given.
        layout: the prompt's :class:`TokenLayout` (``L`` tokens).
        policy: the compression policy.
        max_new_tokens: tokens to generate at most.
        position_ids: explicit prompt positions (``[1, L]`` or M-RoPE ``[3, 1, L]``); computed if None.
        eos_token_id: stop after generating this token (or any of these).
        temperature: 0 = greedy; > 0 samples (with ``top_p`` nucleus filtering, ``seed``).
        show_progress: tqdm bar over decode steps.
        return_logits: also return the logits of every generated token.
        on_prefill: called once after the prefill (compression done) with the report and the
            prefill seconds, before the first token is chosen; for streaming servers.
        on_token: called with every generated token id as soon as it is chosen (eos included);
            returning ``False`` stops generation after that token (the token stays in the result).
            Without callbacks the behaviour is unchanged.
        question_ids: ``[1, Q]`` question ids fed after the compressed prompt (see above), or None.
        question_embeds: ``[1, Q, hidden]`` question embeddings instead of ``question_ids`` (at most
            one of the two). ``prefill_seconds`` then covers both forwards (time to first token) and
            the report describes the compressed prompt only (``prompt_length == L``).
        **model_inputs: extra prefill inputs (``pixel_values``, ``image_grid_thw``,
            ``mm_token_type_ids``...). For Qwen2-VL, ``mm_token_type_ids`` is derived from the layout
            when missing (without it Qwen2.5-VL silently skips M-RoPE).

    Returns:
        :class:`GenerationResult` with the generated ids and the compression report.
    """
    prompt = _check_generation_args(input_ids, inputs_embeds, max_new_tokens, temperature, top_p)
    question = _check_question(model, question_ids, question_embeds, prompt)
    length = prompt.shape[1]
    layout.check_length(length)
    has_grid = (
        model_inputs.get("image_grid_thw") is not None or model_inputs.get("video_grid_thw") is not None
    )
    if has_grid and model_inputs.get("mm_token_type_ids") is None:
        model_inputs["mm_token_type_ids"] = layout.to_mm_token_type_ids().to(prompt.device)
    device = prompt.device
    if position_ids is None:
        position_ids = prompt_position_ids(model, input_ids, length, model_inputs)
    position_ids = position_ids.to(device)
    eos = {eos_token_id} if isinstance(eos_token_id, int) else set(eos_token_id or [])
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    tokens: list[int] = []
    logits: list[torch.Tensor] = []
    stopped = False
    with compress(model, policy, layout) as session:
        started = time.perf_counter()
        out = model(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            position_ids=position_ids,
            past_key_values=session.cache,
            use_cache=True,
            logits_to_keep=1,
            **model_inputs,
        )
        if question is not None:
            position_ids = _next_positions(position_ids, 0, question.shape[1])
            out = model(
                input_ids=question_ids,
                inputs_embeds=question_embeds,
                position_ids=position_ids,
                past_key_values=session.cache,
                use_cache=True,
                logits_to_keep=1,
            )
        prefill_seconds = time.perf_counter() - started
        if on_prefill is not None:
            on_prefill(session.report, prefill_seconds)
        decode_seconds = 0.0
        for step in tqdm(range(max_new_tokens), desc="decode", disable=not show_progress, leave=False):
            token = choose_token(out.logits[0, -1], temperature, top_p, generator)
            tokens.append(token)
            if return_logits:
                logits.append(out.logits[0, -1].float())
            proceed = on_token is None or on_token(token) is not False
            if token in eos:
                stopped = True
                break
            if not proceed:
                break
            if step + 1 == max_new_tokens:
                break
            started = time.perf_counter()
            out = model(
                input_ids=torch.tensor([[token]], device=device),
                position_ids=_next_positions(position_ids, step, 1).to(device),
                past_key_values=session.cache,
                use_cache=True,
                logits_to_keep=1,
            )
            decode_seconds += time.perf_counter() - started
    return GenerationResult(
        tokens=torch.tensor(tokens, dtype=torch.long),
        report=session.report,
        stopped_by_eos=stopped,
        logits=torch.stack(logits) if return_logits else None,
        prefill_seconds=prefill_seconds,
        decode_seconds=decode_seconds,
    )
