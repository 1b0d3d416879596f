"""Loaded models, each driven by its own serving engine, and the events one generation streams.

* :class:`ModelRuntime` holds the registry's models (:mod:`.models`). :meth:`ModelRuntime.load_all`
  runs during warm-up (health NOT_SERVING until every model is in memory): each model gets a
  :class:`~trillium.engine.Engine` with the configured KV byte budget and limits. Asking for a model
  that is not configured is NOT_FOUND; one still loading is UNAVAILABLE.
* :meth:`LoadedModel.prompt` turns the request's segments into the engine's prompt: av-tiny's
  processor (video, audio, text) and its summed embeddings, or a causal LM's tokenizer with its
  chat template (text only).
* :meth:`LoadedModel.stream` submits the generation to the engine and yields the engine's
  ``Started``, this module's :class:`Prefilled` (with the sparse-prefill density), the engine's
  ``Token``... and ``Finished``. Engine errors become service errors
  naming the field or limit (INVALID_ARGUMENT, RESOURCE_EXHAUSTED). Closing the iterator early
  (client gone, stop string, deadline) cancels the request: the engine drops it at its next step
  boundary and returns its KV bytes at once.

With sparse prefill the policy is ``ComposedPolicy(base=policy, prefill=STSparsePrefill(params))``,
the library's own composition of ST-SpAttn with an eviction policy; the engine prefills such a
prompt in one pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trillium.engine import (
    AsyncEngine,
    CapacityExceededError,
    Engine,
    EngineConfig,
    EngineError,
    Failed,
    Finished,
    GenerationRequest,
    RequestRejectedError,
    Started,
    Token,
    default_kv_cache_bytes,
)
from trillium.engine import Cancelled as EngineCancelled
from trillium.engine import Prefilled as EnginePrefilled
from trillium.inference.service.generation import DecodeSettings
from trillium.inference.service.inputs import build_av_inputs
from trillium.inference.service.models import DTYPES, ModelSpec, resolve_device
from trillium.inference.service.settings import InferenceSettings
from trillium.inference.service.sparse import has_video, prefill_density
from trillium.inference.v1 import inference_pb2
from trillium.kvcompress.layout import TokenLayout
from trillium.kvcompress.policies.base import Policy
from trillium.kvcompress.policies.composed import ComposedPolicy
from trillium.kvcompress.policies.st_sparse import STSparsePrefill
from trillium.kvcompress.registry import make_policy
from trillium.kvcompress.report import CompressionReport
from trillium.kvcompress.sparse_prefill import STSparseParams
from trillium.models.av_tiny import AVTinyProcessor, embed_inputs, load_av_tiny
from trillium.servicekit.errors import (
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
    ValidationError,
)

__all__ = ["Finished", "LoadedModel", "ModelRuntime", "Prefilled", "Prompt", "Started", "Token"]


def full_cache_policy() -> Policy:
    """A policy that keeps every prompt token (budget 1.0 short-circuits to "select all")."""
    return make_policy("streaming_llm", budget=1.0)


@dataclass(frozen=True)
class Prefilled:
    """The prefill is done; ``sparse``: sparse prefill was requested, ``attention_density``: the
    fraction of causal attention tiles computed (1.0 for a dense prefill or a prompt without video)."""

    report: CompressionReport
    seconds: float
    sparse: bool = False
    attention_density: float = 1.0


Event = Started | Prefilled | Token | Finished


@dataclass(frozen=True)
class Prompt:
    """The engine's view of a request's segments: ids or embeddings, and the token layout."""

    layout: TokenLayout
    ids: torch.Tensor | None = None
    embeds: torch.Tensor | None = None


def service_error(error: Exception) -> Exception:
    """An engine error as the service error a client gets (field or limit named)."""
    if isinstance(error, RequestRejectedError):
        field_name = {"max_new_tokens": "generation.max_new_tokens", "prompt": "segments"}.get(
            error.field, error.field
        )
        return ValidationError(field_name or "segments", str(error))
    if isinstance(error, CapacityExceededError):
        return ResourceExhaustedError(str(error), field=error.limit)
    return error


class Detokenizer:
    """Turns generated ids into text deltas; ``text`` is everything so far (for stop strings)."""

    def __init__(self, render: Callable[[list[int]], str], separator: str = "") -> None:
        self._render = render
        self._ids: list[int] = []
        self._separator = separator
        self.text = ""

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        if self._separator:  # word-level vocabulary (av-tiny): one word per token
            delta = self._render([token_id])
            self.text = f"{self.text}{self._separator}{delta}" if self.text else delta
            return delta
        text = self._render(self._ids)
        delta, self.text = text[len(self.text) :], text
        return delta


@dataclass
class LoadedModel:
    """A model in memory, its processor or tokenizer, and the engine that runs it."""

    spec: ModelSpec
    model: nn.Module
    engine: Engine
    processor: AVTinyProcessor | None = None
    tokenizer: Any = None
    eos_token_ids: tuple[int, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def eos_token_id(self) -> int:
        return self.eos_token_ids[0] if self.eos_token_ids else -1

    def token_text(self, token_id: int) -> str:
        """The text of one generated token (av-tiny: its vocabulary word)."""
        if self.processor is not None:
            vocab = self.processor.vocab
            return vocab[token_id] if 0 <= token_id < len(vocab) else "<unk>"
        return self.tokenizer.decode([token_id], skip_special_tokens=True)

    def detokenizer(self) -> Detokenizer:
        if self.processor is not None:
            return Detokenizer(lambda ids: self.token_text(ids[0]), separator=" ")
        return Detokenizer(lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True))

    # ----------------------------------------------------------------- prompts
    def prompt(self, segments: list[inference_pb2.Segment]) -> Prompt:
        """The request's segments as the engine's prompt (errors name the segment at fault)."""
        if self.processor is not None:
            inputs = build_av_inputs(self.processor, segments)
            with torch.no_grad():
                embeds = embed_inputs(self.model, inputs.input_ids, inputs.aux_ids)[0]
            return Prompt(layout=inputs.layout, embeds=embeds)
        return self._text_prompt(segments)

    def _text_prompt(self, segments: list[inference_pb2.Segment]) -> Prompt:
        texts = []
        for index, segment in enumerate(segments):
            kind = segment.WhichOneof("content")
            if kind != "text":
                raise ValidationError(
                    f"segments[{index}]", f"model {self.name!r} is text-only ({self.spec.kind}), got {kind}"
                )
            texts.append(segment.text)
        text = "\n".join(texts)
        if not text.strip():
            raise ValidationError("segments", "the prompt holds no text")
        if self.spec.chat_template and getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
            )
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        else:
            ids = self.tokenizer(text)["input_ids"]
        prompt_ids = torch.tensor(list(ids), dtype=torch.long)
        return Prompt(layout=TokenLayout.text(prompt_ids.numel()), ids=prompt_ids)

    # ----------------------------------------------------------------- generation
    async def stream(
        self,
        prompt: Prompt,
        policy: Policy | None,
        settings: DecodeSettings,
        sparse: STSparseParams | None = None,
    ) -> AsyncIterator[Event]:
        """Events of one generation (module docstring); ``policy`` None keeps the full cache."""
        prefill = STSparsePrefill(sparse) if sparse is not None and has_video(prompt.layout) else None
        if prefill is not None:
            policy = ComposedPolicy(base=policy or full_cache_policy(), prefill=prefill)
        request = GenerationRequest(
            prompt_ids=prompt.ids,
            prompt_embeds=prompt.embeds,
            layout=prompt.layout,
            policy=policy,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            seed=settings.seed,
            eos_token_ids=() if settings.ignore_eos else self.eos_token_ids,
        )
        events = AsyncEngine(self.engine).stream(request)
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    if isinstance(event, Started | Token | Finished):  # the engine's own events
                        yield event
                    elif isinstance(event, EnginePrefilled):
                        plans = prefill.plans if prefill is not None else []
                        density = prefill_density(plans)
                        plans.clear()  # the tile masks are not needed past the summary
                        yield Prefilled(event.report, event.seconds, sparse is not None, density)
                    elif isinstance(event, Failed):
                        raise service_error(event.error)
                    elif isinstance(event, EngineCancelled):
                        raise UnavailableError("the server is shutting down; retry on another replica")
        except EngineError as exc:  # raised by submit: limits before work
            raise service_error(exc) from None


def _available_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    with contextlib.suppress(OSError, ValueError):
        for line in open("/proc/meminfo").read().splitlines():  # noqa: SIM115 (tiny file)
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def load_model(spec: ModelSpec, settings: InferenceSettings, share: int = 1) -> LoadedModel:
    """Load ``spec`` offline onto its device and start its engine (``share``: models sharing memory)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(spec.device, where=f"model {spec.name!r} device")
    dtype = DTYPES[spec.dtype]
    processor = tokenizer = None
    if spec.kind == "av-tiny":
        model, processor = load_av_tiny(spec.path)
        eos = (processor.token_id("<eos>"),)
    else:
        folder, extra = (spec.path.parent, {"gguf_file": spec.path.name}) if spec.is_gguf else (spec.path, {})
        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=dtype, **extra)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **extra)
        eos = _eos_ids(model, tokenizer)
    model = model.to(device=device, dtype=dtype).eval()
    budget = settings.kv_cache_bytes or default_kv_cache_bytes(_available_memory_bytes(device)) // share
    config = EngineConfig(
        kv_cache_bytes=budget,
        max_context=spec.max_context,
        max_new_tokens_limit=settings.max_new_tokens_limit,
        max_batched_tokens=settings.max_batched_tokens,
        max_prefill_tokens_while_decoding=settings.max_prefill_tokens_while_decoding,
        max_running=settings.max_running_requests,
        max_prefilling=settings.max_prefilling_requests,
        max_queued_requests=settings.max_queued_requests,
        max_queue_seconds=settings.max_queue_seconds,
    )
    engine = Engine(model, config)
    loaded = LoadedModel(spec, model, engine, processor=processor, tokenizer=tokenizer, eos_token_ids=eos)
    warm_up(loaded)
    return loaded


def warm_up(loaded: LoadedModel) -> None:
    """One 8-token prompt and 2 decode steps through the engine before SERVING, so the first
    client does not pay for lazy kernel and allocator set-up (about 1.5 s on SmolLM2 here)."""
    hidden = loaded.model.get_input_embeddings().weight
    prompt = hidden.new_zeros(8, hidden.shape[1])
    loaded.engine.generate([GenerationRequest(prompt_embeds=prompt, max_new_tokens=2)])


def _eos_ids(model: nn.Module, tokenizer: Any) -> tuple[int, ...]:
    ids: list[int] = []
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured]
    ids.append(getattr(tokenizer, "eos_token_id", None))
    return tuple(dict.fromkeys(int(i) for i in ids if i is not None))


class ModelRuntime:
    """The configured models, loaded during warm-up, each with its own engine."""

    def __init__(self, specs: list[ModelSpec], settings: InferenceSettings) -> None:
        self.specs = {spec.name: spec for spec in specs}
        self.settings = settings
        self._loaded: dict[str, LoadedModel] = {}

    @property
    def loaded(self) -> list[str]:
        return sorted(self._loaded)

    def loaded_config(self, name: str) -> dict | None:
        """The loaded model's config as a dict (None while it is not loaded)."""
        loaded = self._loaded.get(name)
        return None if loaded is None else loaded.model.config.to_dict()

    def models(self) -> list[LoadedModel]:
        return [self._loaded[name] for name in sorted(self._loaded)]

    async def load_all(self, on_loaded: Callable[[LoadedModel], None] | None = None) -> None:
        """Load every configured model (one at a time: loading is memory- and CPU-heavy)."""
        for spec in self.specs.values():
            if spec.name not in self._loaded:
                loaded = await asyncio.to_thread(load_model, spec, self.settings, len(self.specs))
                self._loaded[spec.name] = loaded
                if on_loaded is not None:
                    on_loaded(loaded)

    async def get(self, name: str) -> LoadedModel:
        """The model named ``name``: NOT_FOUND (field ``model``) if not configured, UNAVAILABLE
        while it is still loading."""
        if name in self._loaded:
            return self._loaded[name]
        if name not in self.specs:
            raise NotFoundError(
                f"no model {name!r}; ListModels shows the {len(self.specs)} served here", field="model"
            )
        raise UnavailableError(f"model {name!r} is still loading; retry shortly")

    def close(self) -> None:
        for loaded in self._loaded.values():
            loaded.engine.close()
