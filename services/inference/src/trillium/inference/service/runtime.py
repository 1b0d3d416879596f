"""Loaded models and the decode worker: prefill + decode on a thread, tokens streamed to asyncio.

* :class:`ModelRuntime` loads a model from the models folder on first use (only names the catalogue
  lists), keeps it, and hands out one :class:`LoadedModel` per name. Loading runs on a worker thread.
* :meth:`LoadedModel.stream` runs ``trillium.kvcompress.hf.generate_with_policy`` on a worker thread
  (with sparse prefill, the policy is ``ComposedPolicy(base=policy, prefill=STSparsePrefill(params))``,
  the library's own composition of ST-SpAttn with an eviction policy) and yields :class:`Prefilled`,
  :class:`Token` and a final :class:`Finished` event to the event loop as they happen. One
  generation runs at a time per model (an ``asyncio.Lock``; the lock is released by the worker's
  completion, never before, so a cancelled RPC cannot let two decodes overlap).
* Hand-off is bounded: the worker waits when :data:`MAX_EVENTS_AHEAD` events are not yet taken by the
  consumer, so a consumer that stops reading (client gone) stops the decode within that many
  tokens, and cancellation (``aclose``/task cancel) stops it at the next token — the thread ends,
  nothing leaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from trillium.inference.service.catalogue import scan_models
from trillium.inference.service.generation import DecodeSettings
from trillium.inference.service.sparse import has_video, prefill_density
from trillium.kvcompress.hf import generate_with_policy
from trillium.kvcompress.policies.base import Policy
from trillium.kvcompress.policies.composed import ComposedPolicy
from trillium.kvcompress.policies.st_sparse import STSparsePrefill
from trillium.kvcompress.registry import make_policy
from trillium.kvcompress.report import CompressionReport, GenerationResult
from trillium.kvcompress.sparse_prefill import STSparseParams
from trillium.models.av_tiny import AVInputs, AVTinyProcessor, embed_inputs, load_av_tiny
from trillium.models.av_tiny.processor import PROCESSOR_CONFIG
from trillium.servicekit.errors import FailedPreconditionError, NotFoundError

MAX_EVENTS_AHEAD = 8
_POLL_SECONDS = 0.05


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


@dataclass(frozen=True)
class Token:
    token_id: int


@dataclass(frozen=True)
class Finished:
    result: GenerationResult


Event = Prefilled | Token | Finished


class _Handoff:
    """Worker thread -> event loop queue with at most ``limit`` events in flight.

    ``put`` (worker side) blocks while the consumer is ``limit`` events behind and returns False once
    the consumer cancelled; ``get`` (loop side) frees one slot per event taken.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int = MAX_EVENTS_AHEAD) -> None:
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.slots = threading.Semaphore(limit)
        self.cancelled = threading.Event()

    def put(self, item: object) -> bool:
        while not self.slots.acquire(timeout=_POLL_SECONDS):
            if self.cancelled.is_set():
                return False
        if self.cancelled.is_set():
            return False
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody will read
            return False
        return True

    def put_final(self, item: object) -> None:
        """The last event (result or exception): never blocks; dropped only if the loop is closed."""
        with contextlib.suppress(RuntimeError):  # the server shut its loop down meanwhile
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def get(self) -> object:
        item = await self.queue.get()
        self.slots.release()
        return item

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class LoadedModel:
    """A model in memory with its processor; ``lock`` serialises its generations."""

    name: str
    model: torch.nn.Module
    processor: AVTinyProcessor
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # the running (or last) worker; resolves to its GenerationResult (None if it failed)
    worker: asyncio.Future | None = None

    @property
    def eos_token_id(self) -> int:
        return self.processor.token_id("<eos>")

    def token_text(self, token_id: int) -> str:
        """The vocabulary entry of one generated token."""
        vocab = self.processor.vocab
        return vocab[token_id] if 0 <= token_id < len(vocab) else "<unk>"

    def _generate(
        self,
        inputs: AVInputs,
        policy: Policy | None,
        settings: DecodeSettings,
        handoff: _Handoff,
        sparse: STSparseParams | None = None,
    ) -> GenerationResult | None:
        """Worker-thread body: prefill + decode, every event through ``handoff``."""
        sparse_run = sparse is not None and has_video(inputs.layout)  # else its plan is dense anyway
        prefill = STSparsePrefill(sparse) if sparse_run else None

        def prefilled(report: CompressionReport, seconds: float) -> None:
            plans = prefill.plans if prefill is not None else []
            handoff.put(Prefilled(report, seconds, sparse is not None, prefill_density(plans)))
            plans.clear()  # the tile masks are not needed past the summary

        try:
            policy = policy or full_cache_policy()
            if prefill is not None:
                policy = ComposedPolicy(base=policy, prefill=prefill)
            with torch.no_grad():
                embeds = embed_inputs(self.model, inputs.input_ids, inputs.aux_ids)
                result = generate_with_policy(
                    self.model,
                    inputs_embeds=embeds,
                    layout=inputs.layout,
                    policy=policy,
                    max_new_tokens=settings.max_new_tokens,
                    eos_token_id=self.eos_token_id,
                    temperature=settings.temperature,
                    top_p=settings.top_p,
                    seed=settings.seed,
                    show_progress=False,
                    on_prefill=prefilled,
                    on_token=lambda token: handoff.put(Token(token)),
                )
            handoff.put_final(Finished(result))
            return result
        except BaseException as exc:  # surfaces in the RPC as INTERNAL (or the typed error)
            handoff.put_final(exc)
            return None

    async def stream(
        self,
        inputs: AVInputs,
        policy: Policy | None,
        settings: DecodeSettings,
        on_started: Callable[[float], None] | None = None,
        sparse: STSparseParams | None = None,
    ) -> AsyncIterator[Event]:
        """Events of one generation: ``Prefilled``, ``Token``..., ``Finished`` (see module docstring).

        ``sparse`` runs the prefill with ST-SpAttn (PureKV) under ``policy`` (None = full cache).

        ``on_started(queue_seconds)`` runs once the model's lock is held. Closing the iterator early
        (client cancelled, stop string) stops the worker at its next token; the model's lock is
        released when the worker thread has returned.
        """
        loop = asyncio.get_running_loop()
        handoff = _Handoff(loop)
        queued = time.perf_counter()
        await self.lock.acquire()
        try:
            if on_started is not None:
                on_started(time.perf_counter() - queued)
            self.worker = loop.run_in_executor(
                None, self._generate, inputs, policy, settings, handoff, sparse
            )
        except BaseException:
            self.lock.release()
            raise
        self.worker.add_done_callback(lambda _: self.lock.release())
        try:
            while True:
                event = await handoff.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            handoff.cancel()


class ModelRuntime:
    """The models of ``models_dir``, loaded lazily by name and kept in memory."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = models_dir
        self._loaded: dict[str, LoadedModel] = {}
        self._loading = asyncio.Lock()

    @property
    def loaded(self) -> list[str]:
        return sorted(self._loaded)

    async def get(self, name: str) -> LoadedModel:
        """The model named ``name``; NOT_FOUND (field ``model``) if the catalogue does not list it."""
        if name in self._loaded:
            return self._loaded[name]
        async with self._loading:
            if name in self._loaded:
                return self._loaded[name]
            entries = await asyncio.to_thread(scan_models, self.models_dir)
            if name not in entries:
                raise NotFoundError(
                    f"no model {name!r}; ListModels shows the {len(entries)} served here", field="model"
                )
            loaded = await asyncio.to_thread(self._load, name, entries[name].path)
            self._loaded[name] = loaded
            return loaded

    @staticmethod
    def _load(name: str, folder: Path) -> LoadedModel:
        if not (folder / PROCESSOR_CONFIG).is_file():
            raise FailedPreconditionError(
                f"model {name!r} ships no {PROCESSOR_CONFIG}: only av-tiny-style models (with a processor) "
                "are served by Generate",
                field="model",
            )
        try:
            model, processor = load_av_tiny(folder)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            message = f"model {name!r} could not be loaded: {exc}"
            raise FailedPreconditionError(message, field="model") from None
        return LoadedModel(name, model, processor)
