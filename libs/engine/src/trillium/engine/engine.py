"""The serving engine: one thread owns the model, the batch and the KV budget.

:meth:`Engine.submit` checks a request (limits before work: context length, ``max_new_tokens``,
the request's peak bytes against the whole budget, the queue length) and queues it; the engine
thread then loops: expire requests that waited too long, admit what fits the KV budget, plan a step
(:mod:`trillium.engine.scheduler`), run it (:mod:`trillium.engine.runner`), sample one token per
sequence that got logits, and deliver events. Each request's events go to its ``sink`` (called on
the engine thread, so it must not block): :class:`Started`, :class:`Prefilled`, :class:`Token`...,
then exactly one of :class:`Finished`, :class:`Failed` or :class:`Cancelled`.

Cancellation (:meth:`Engine.cancel`, or a deadline the API layer turns into one) takes effect at the
next step boundary - between two prefill chunks or two decoded tokens - and returns the request's
bytes at once. :class:`AsyncEngine` wraps this for asyncio; :meth:`Engine.generate` runs requests to
completion from plain Python (benchmarks, notebooks).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from trillium.engine.errors import CapacityExceededError, RequestFailedError, RequestRejectedError
from trillium.engine.memory import KVBudget
from trillium.engine.runner import ModelRunner, max_positions
from trillium.engine.scheduler import Scheduler, SchedulerLimits, StepPlan, compressed_bytes, peak_bytes
from trillium.engine.sequence import (
    Cancelled,
    Event,
    Failed,
    Finished,
    GenerationRequest,
    Prefilled,
    Sequence,
    Started,
    Token,
)
from trillium.kvcompress.hf import choose_token
from trillium.kvcompress.layout import TokenLayout
from trillium.kvcompress.report import GenerationResult

__all__ = ["AsyncEngine", "Engine", "EngineConfig", "EngineStats"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    """Engine limits (flags of ``trillium-inference serve`` carry the same names).

    Attributes:
        kv_cache_bytes: the KV byte budget shared by all requests.
        max_context: prompt + new tokens allowed (default: the model's ``max_position_embeddings``).
        max_new_tokens_limit: the most ``max_new_tokens`` a request may ask for.
        max_batched_tokens: tokens per step (decode tokens + prefill chunks).
        max_prefill_tokens_while_decoding: prompt tokens per step while any sequence decodes.
        max_running: sequences admitted at once.
        max_prefilling: prompts in prefill at once (each holds its uncompressed cache meanwhile).
        max_queued_requests, max_queue_seconds: bounds of the waiting queue.
        decode_backend: ``auto``, ``views`` or ``packed`` (see
            :func:`trillium.engine.attention.decode_attention`).
    """

    kv_cache_bytes: int
    max_context: int | None = None
    max_new_tokens_limit: int = 4096
    max_batched_tokens: int = 512
    max_prefill_tokens_while_decoding: int = 64
    max_running: int = 256
    max_prefilling: int = 1
    max_queued_requests: int = 256
    max_queue_seconds: float = 60.0
    decode_backend: str = "auto"


@dataclass
class EngineStats:
    """Counters and the last step's shape, read by metrics (plain values, engine-thread written)."""

    steps: int = 0
    step_tokens: int = 0
    step_sequences: int = 0
    running: int = 0
    waiting: int = 0
    admitted_max: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    finished: dict[str, int] = field(default_factory=dict)


class Engine:
    """Continuous batching over one model (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        config: EngineConfig,
        *,
        on_step: Callable[[Engine, StepPlan, float], None] | None = None,
    ) -> None:
        self.runner = ModelRunner(model, decode_backend=config.decode_backend)
        self.config = config
        self.max_context = config.max_context or max_positions(model)
        self.budget = KVBudget(config.kv_cache_bytes)
        limits = SchedulerLimits(
            max_batched_tokens=config.max_batched_tokens,
            max_prefill_tokens_while_decoding=config.max_prefill_tokens_while_decoding,
            max_running=config.max_running,
            max_prefilling=config.max_prefilling,
            max_queued_requests=config.max_queued_requests,
            max_queue_seconds=config.max_queue_seconds,
        )
        self.scheduler = Scheduler(self.budget, self.runner.shape, self.runner.query_heads, limits)
        self.stats = EngineStats()
        self.on_step = on_step
        self._inbox: queue.SimpleQueue[Sequence | None] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards the queue-length check against concurrent submits
        self._stopping = False
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name="trillium-engine", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- public API
    @property
    def pending(self) -> int:
        """Requests submitted but not yet seen by the engine thread."""
        return self._inbox.qsize()

    def submit(self, request: GenerationRequest, sink: Callable[[Event], None]) -> Sequence:
        """Check ``request`` and queue it; raises before any work if it can never run or the
        queue is full. Returns the :class:`Sequence` handle (for :meth:`cancel`)."""
        sequence = Sequence(request=request, sink=sink)
        self._check(sequence)
        with self._lock:
            pending = self._inbox.qsize() + len(self.scheduler.waiting)
            if pending >= self.config.max_queued_requests:
                self._count_rejection("max_queued_requests")
                raise CapacityExceededError(
                    f"{pending} requests are queued, the limit (max_queued_requests) is "
                    f"{self.config.max_queued_requests}; retry later",
                    limit="max_queued_requests",
                )
            self._inbox.put(sequence)
        self._wake.set()
        return sequence

    def cancel(self, sequence: Sequence) -> None:
        """Stop a request at the next step boundary (its bytes are returned then)."""
        sequence.cancelled.set()
        self._wake.set()

    def generate(self, requests: Iterable[GenerationRequest]) -> list[GenerationResult]:
        """Run ``requests`` together to completion (blocking); raises the first request's error."""
        done: list[queue.SimpleQueue] = []
        for request in requests:
            events: queue.SimpleQueue = queue.SimpleQueue()
            self.submit(request, events.put)
            done.append(events)
        results = []
        for events in done:
            while True:
                event = events.get()
                if isinstance(event, Finished):
                    results.append(event.result)
                    break
                if isinstance(event, Failed):
                    raise event.error
        return results

    def close(self) -> None:
        """Stop the engine thread; requests still queued or running end with :class:`Cancelled`."""
        self._stopping = True
        self._inbox.put(None)
        self._wake.set()
        self._thread.join(timeout=30)

    # ----------------------------------------------------------------- checks before work
    def _check(self, sequence: Sequence) -> None:
        request = sequence.request
        if (request.prompt_ids is None) == (request.prompt_embeds is None):
            raise RequestRejectedError("pass exactly one of prompt_ids or prompt_embeds", field="prompt")
        length = request.prompt_length
        if length < 1:
            raise RequestRejectedError("the prompt holds no tokens", field="prompt")
        limit = self.config.max_new_tokens_limit
        if not 1 <= request.max_new_tokens <= limit:
            raise RequestRejectedError(
                f"max_new_tokens must be 1 to {limit} (the engine's max_new_tokens_limit), "
                f"got {request.max_new_tokens}",
                field="max_new_tokens",
            )
        if length + request.max_new_tokens > self.max_context:
            raise RequestRejectedError(
                f"the prompt has {length} tokens and max_new_tokens is {request.max_new_tokens}: "
                f"{length + request.max_new_tokens} tokens exceed the model's context of {self.max_context}",
                field="prompt",
            )
        if request.layout is None:
            request.layout = TokenLayout.text(length)
        if len(request.layout) != length:
            raise RequestRejectedError(
                f"layout describes {len(request.layout)} tokens, the prompt has {length}", field="layout"
            )
        if request.policy is not None:
            try:
                request.policy.begin(request.layout, self.runner.shape.num_layers)
            except ValueError as exc:
                raise RequestRejectedError(str(exc), field="compression") from None
        need = peak_bytes(sequence, self.runner.shape, self.runner.query_heads)
        if need > self.budget.total:
            self._count_rejection("kv_cache_bytes")
            raise CapacityExceededError(
                f"the request needs {need} KV bytes at its peak ({length} prompt tokens, "
                f"max_new_tokens {request.max_new_tokens}); the whole budget (kv_cache_bytes) is "
                f"{self.budget.total}",
                limit="kv_cache_bytes",
            )

    def _count_rejection(self, reason: str) -> None:
        self.stats.rejections[reason] = self.stats.rejections.get(reason, 0) + 1

    # ----------------------------------------------------------------- the loop
    def _loop(self) -> None:
        while self._drain_inbox():
            try:
                self._iterate()
            except Exception as exc:  # a bug must not leave callers waiting: fail what runs, go on
                logger.exception("engine step failed")
                for sequence in [*self.scheduler.running]:
                    self._end(sequence, Failed(RequestFailedError(f"engine error: {exc}")), "error")
        for sequence in [*self.scheduler.running, *self.scheduler.waiting]:
            self._end(sequence, Cancelled(), "abort")

    def _iterate(self) -> None:
        """One pass of the loop: admit, plan, run one step (or wait for work)."""
        self._drop_cancelled()
        self._expire()
        for sequence in self.scheduler.admit():
            self._start(sequence)
        plan = self.scheduler.plan({s.id for s in self.scheduler.running if self.runner.single_chunk(s)})
        self._publish(plan)
        if not plan:
            if self._busy and self.on_step is not None:
                self.on_step(self, plan, 0.0)  # once on going idle, so observers see the last state
            self._busy = False
            self._wake.wait(timeout=0.05 if self.scheduler.waiting else 1.0)
            self._wake.clear()
            return
        self._busy = True
        started = time.perf_counter()
        self._step(plan)
        if self.on_step is not None:
            self.on_step(self, plan, time.perf_counter() - started)

    def _drain_inbox(self) -> bool:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return not self._stopping
            if item is None:
                return False
            self.scheduler.waiting.append(item)

    def _drop_cancelled(self) -> None:
        for sequence in [*self.scheduler.running, *self.scheduler.waiting]:
            if sequence.cancelled.is_set():
                self._end(sequence, Cancelled(), "abort")

    def _expire(self) -> None:
        limit = self.config.max_queue_seconds
        for sequence in self.scheduler.expired(time.perf_counter()):
            self._count_rejection("max_queue_seconds")
            waited = time.perf_counter() - sequence.submitted_at
            prefilling = sum(1 for s in self.scheduler.running if s.is_prefilling)
            error = CapacityExceededError(
                f"waited {waited:.1f} s to be admitted, the limit (max_queue_seconds) is {limit:g} s; "
                f"{self.budget.used} of {self.budget.total} KV bytes in use, {len(self.scheduler.running)} "
                f"requests running ({prefilling} in prefill, max_prefilling {self.config.max_prefilling})",
                limit="max_queue_seconds",
            )
            self._end(sequence, Failed(error), "rejected")

    def _start(self, sequence: Sequence) -> None:
        self.runner.start(sequence)
        reserved = self.budget.reserved[sequence.id]
        sequence.sink(Started(sequence.admitted_at - sequence.submitted_at, reserved))

    def _publish(self, plan: StepPlan) -> None:
        stats = self.stats
        stats.running, stats.waiting = len(self.scheduler.running), len(self.scheduler.waiting)
        stats.admitted_max = max(stats.admitted_max, stats.running)
        stats.step_tokens, stats.step_sequences = plan.tokens, len(plan.decode) + len(plan.prefill)

    def _step(self, plan: StepPlan) -> None:
        try:
            logits = self.runner.run(plan.decode, plan.prefill)
        except Exception as exc:  # the whole step failed: its requests fail, the engine goes on
            for sequence in [*plan.decode, *(chunk.sequence for chunk in plan.prefill)]:
                self._end(sequence, Failed(RequestFailedError(f"generation failed: {exc}")), "error")
            return
        self.stats.steps += 1
        for chunk in plan.prefill:
            sequence = chunk.sequence
            if sequence.failed is not None:
                error = RequestFailedError(f"prefill failed: {sequence.failed}", field="compression")
                self._end(sequence, Failed(error), "error")
            elif chunk.final:
                self._prefilled(sequence)
        for sequence in [*plan.decode, *(c.sequence for c in plan.prefill if c.final)]:
            if sequence.id in logits and sequence.failed is None and sequence in self.scheduler.running:
                self._next_token(sequence, logits[sequence.id])

    def _prefilled(self, sequence: Sequence) -> None:
        now = time.perf_counter()
        sequence.prefill_seconds = now - sequence.admitted_at
        sequence.decode_started = now
        if sequence.request.policy is None:
            sequence.report = self.runner.full_cache_report(sequence)
        else:
            self.budget.resize(sequence.id, compressed_bytes(sequence, self.runner.shape))
        sequence.kept_queries, sequence.column_sums = [], []
        sequence.sink(Prefilled(sequence.report, sequence.prefill_seconds))

    def _next_token(self, sequence: Sequence, logits: torch.Tensor) -> None:
        request = sequence.request
        token = choose_token(logits, request.temperature, request.top_p, sequence.generator)
        sequence.tokens.append(token)
        sequence.sink(Token(token))
        if token in request.eos_token_ids:
            self._finish(sequence, stopped_by_eos=True)
        elif len(sequence.tokens) >= request.max_new_tokens:
            self._finish(sequence, stopped_by_eos=False)

    def _finish(self, sequence: Sequence, *, stopped_by_eos: bool) -> None:
        result = GenerationResult(
            tokens=torch.tensor(sequence.tokens, dtype=torch.long),
            report=sequence.report,
            stopped_by_eos=stopped_by_eos,
            prefill_seconds=sequence.prefill_seconds,
            decode_seconds=time.perf_counter() - sequence.decode_started,
        )
        self._end(sequence, Finished(result), "stop" if stopped_by_eos else "length")

    def _end(self, sequence: Sequence, event: Event, reason: str) -> None:
        self.scheduler.finish(sequence)
        self.runner.release(sequence)
        self.stats.finished[reason] = self.stats.finished.get(reason, 0) + 1
        with contextlib.suppress(Exception):  # a sink whose consumer is gone must not stop the engine
            sequence.sink(event)


class AsyncEngine:
    """asyncio face of an :class:`Engine`: ``async for event in engine.stream(request)``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        """Events of one request until its last; leaving the loop early cancels it."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def sink(event: Event) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(events.put_nowait, event)

        sequence = self.engine.submit(request, sink)
        try:
            while True:
                event = await events.get()
                yield event
                if isinstance(event, Finished | Failed | Cancelled):
                    return
        finally:
            self.engine.cancel(sequence)
