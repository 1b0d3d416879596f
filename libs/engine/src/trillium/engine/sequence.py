"""A request as submitted, and the engine's running state of it (a *sequence*)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from trillium.engine.kv import LayerKV
from trillium.kvcompress.hf import CompressionSession
from trillium.kvcompress.layout import TokenLayout
from trillium.kvcompress.policies.base import Policy
from trillium.kvcompress.report import CompressionReport, GenerationResult

__all__ = [
    "Cancelled",
    "Failed",
    "Finished",
    "GenerationRequest",
    "Prefilled",
    "Sequence",
    "Started",
    "Token",
]

_IDS = itertools.count(1)


@dataclass
class GenerationRequest:
    """One generation.

    Attributes:
        prompt_ids: ``[L]`` token ids, or None when ``prompt_embeds`` is given.
        prompt_embeds: ``[L, hidden]`` input embeddings (multimodal prompts: av-tiny's processor
            adds auxiliary embeddings), or None.
        layout: the prompt's :class:`TokenLayout` (None: all text, one segment).
        policy: the compression policy (None: full cache).
        max_new_tokens: tokens to generate at most (eos included).
        temperature, top_p, seed: sampling (temperature 0 = greedy).
        eos_token_ids: tokens that end the generation.
    """

    prompt_ids: torch.Tensor | None = None
    prompt_embeds: torch.Tensor | None = None
    layout: TokenLayout | None = None
    policy: Policy | None = None
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    @property
    def prompt_length(self) -> int:
        prompt = self.prompt_ids if self.prompt_ids is not None else self.prompt_embeds
        return 0 if prompt is None else int(prompt.shape[0])


@dataclass(frozen=True)
class Started:
    """Admitted: KV bytes reserved after ``queue_seconds`` in the queue."""

    queue_seconds: float
    reserved_bytes: int


@dataclass(frozen=True)
class Prefilled:
    """The prompt is in the cache (compressed); ``seconds`` from admission to the first logits."""

    report: CompressionReport
    seconds: float


@dataclass(frozen=True)
class Token:
    token_id: int


@dataclass(frozen=True)
class Finished:
    result: GenerationResult


@dataclass(frozen=True)
class Failed:
    """The request ended with ``error`` (an :class:`~trillium.engine.errors.EngineError`)."""

    error: Exception


@dataclass(frozen=True)
class Cancelled:
    pass


Event = Started | Prefilled | Token | Finished | Failed | Cancelled


@dataclass(eq=False)  # identity: a sequence is one request, whatever its tensors hold
class Sequence:
    """Engine-side state of one request, owned by the engine thread (``cancelled`` excepted)."""

    request: GenerationRequest
    sink: Callable[[Event], None]
    id: int = field(default_factory=lambda: next(_IDS))
    submitted_at: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)
    admitted_at: float = 0.0
    prefilled: int = 0
    stores: list[LayerKV] = field(default_factory=list)
    session: CompressionSession | None = None
    kept_queries: list[list[torch.Tensor]] = field(default_factory=list)
    column_sums: list[torch.Tensor | None] = field(default_factory=list)
    report: CompressionReport | None = None
    tokens: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None
    prefill_seconds: float = 0.0
    decode_started: float = 0.0
    failed: Exception | None = None
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_length(self) -> int:
        return self.request.prompt_length

    @property
    def is_prefilling(self) -> bool:
        return self.prefilled < self.prompt_length

    @property
    def next_position(self) -> int:
        """Position id of the next decoded token's input (the last generated token)."""
        return self.prompt_length + len(self.tokens) - 1
