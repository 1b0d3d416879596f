"""Admission by KV bytes and the plan of each step (continuous batching with chunked prefill).

Every step runs one decode token for each sequence that is decoding, then spends what is left of
``max_batched_tokens`` on prompt chunks of admitted sequences, oldest first (vLLM's
``max_num_batched_tokens``, TGI's ``max_batch_prefill_tokens``): a long prompt is spread over many
steps and never stalls the streams that decode. While any stream decodes, prompt chunks get at most
``max_prefill_tokens_while_decoding`` tokens a step (default 64): measured on SmolLM2 with 8 streams
decoding, a step of 198 ms grows to 300 ms with 64 prompt tokens, 452 ms with 128 and 1.4 s with
512, so the streams' inter-token latency stays within about 1.5x while a new prompt is prefilled
(which then takes longer: its tokens ride along in the decode steps). With nothing decoding a
prompt gets the whole ``max_batched_tokens``. At most ``max_prefilling`` prompts are in prefill at
once, since each holds its uncompressed keys and values (and its scored queries) until its policy
has run.

Admission reserves, before a request's first chunk, the most bytes it will ever hold:

* full cache: the dense cache of ``prompt + max_new_tokens`` tokens (allocated once, exact);
* compressed: the dense prompt in every layer, plus one layer's worth of dense keys (the compressed
  layer exists beside its dense one while the policy runs), plus the scored queries it keeps. After
  the last chunk the reservation shrinks to the compressed cache's exact bytes plus
  ``max_new_tokens`` rows per KV head and layer (the decode tail, allocated once).

Decode growth is reserved up front, so nothing is ever preempted. Requests wait FIFO while the
budget is full; the queue is bounded by length and by time, and past either the request fails with
:class:`~trillium.engine.errors.CapacityExceededError` naming the limit.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from trillium.engine.memory import KVBudget, KVShape
from trillium.engine.runner import PrefillChunk
from trillium.engine.sequence import Sequence

__all__ = ["Scheduler", "SchedulerLimits", "StepPlan", "compressed_bytes", "peak_bytes"]


@dataclass(frozen=True)
class SchedulerLimits:
    max_batched_tokens: int = 512
    max_prefill_tokens_while_decoding: int = 64
    max_running: int = 256
    max_prefilling: int = 1
    max_queued_requests: int = 256
    max_queue_seconds: float = 60.0


@dataclass
class StepPlan:
    decode: list[Sequence] = field(default_factory=list)
    prefill: list[PrefillChunk] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return len(self.decode) + sum(chunk.length for chunk in self.prefill)

    def __bool__(self) -> bool:
        return bool(self.decode or self.prefill)


def peak_bytes(sequence: Sequence, shape: KVShape, query_heads: int) -> int:
    """The most KV bytes a request holds at any time (see the module docstring)."""
    request = sequence.request
    length = sequence.prompt_length
    if request.policy is None:
        return shape.dense_bytes(length + request.max_new_tokens)
    rows = request.policy.scored_rows(request.layout)
    kept_rows = length if rows is None else int(rows.numel())
    queries = shape.num_layers * query_heads * kept_rows * shape.bytes_per_row
    one_layer = shape.layer_bytes(shape.num_kv_heads * length)
    return shape.dense_bytes(length) + one_layer + queries


def compressed_bytes(sequence: Sequence, shape: KVShape) -> int:
    """Exact bytes of a compressed sequence once its decode tail is allocated."""
    decode_rows = sequence.request.max_new_tokens if sequence.request.max_new_tokens > 1 else 0
    total = 0
    for store in sequence.stores:
        total += store.nbytes() + shape.layer_bytes(shape.num_kv_heads * decode_rows)
    return total


class Scheduler:
    """Waiting queue, admission and step plans (engine thread only)."""

    def __init__(self, budget: KVBudget, shape: KVShape, query_heads: int, limits: SchedulerLimits) -> None:
        self.budget = budget
        self.shape = shape
        self.query_heads = query_heads
        self.limits = limits
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def expired(self, now: float) -> list[Sequence]:
        """Waiting requests past ``max_queue_seconds`` (removed from the queue)."""
        late = [s for s in self.waiting if now - s.submitted_at > self.limits.max_queue_seconds]
        for sequence in late:
            self.waiting.remove(sequence)
        return late

    def admit(self) -> list[Sequence]:
        """Admit waiting requests, oldest first, while their peak bytes fit (FIFO: no overtaking)."""
        admitted = []
        while self.waiting and len(self.running) < self.limits.max_running:
            sequence = self.waiting[0]
            prefilling = sum(1 for s in self.running if s.is_prefilling)
            if prefilling >= self.limits.max_prefilling:
                break
            if not self.budget.reserve(sequence.id, peak_bytes(sequence, self.shape, self.query_heads)):
                break
            self.waiting.popleft()
            sequence.admitted_at = time.perf_counter()
            self.running.append(sequence)
            admitted.append(sequence)
        return admitted

    def plan(self, single_chunk: set[int]) -> StepPlan:
        """The next step: every decoding sequence, then prompt chunks within the token budget.

        ``single_chunk``: ids of sequences whose prompt runs in one pass whatever the budget."""
        plan = StepPlan(decode=[s for s in self.running if not s.is_prefilling])
        room = self.limits.max_batched_tokens - len(plan.decode)
        if plan.decode:  # streams are decoding: keep the step short, their next token waits on it
            room = min(room, self.limits.max_prefill_tokens_while_decoding)
        for sequence in self.running:
            if not sequence.is_prefilling:
                continue
            left = sequence.prompt_length - sequence.prefilled
            if sequence.id in single_chunk:  # the whole prompt, the step's only prefill
                if not plan.prefill:
                    plan.prefill.append(PrefillChunk(sequence, 0, left))
                break
            if room <= 0 and plan:
                break
            take = min(left, max(room, 1))
            plan.prefill.append(PrefillChunk(sequence, sequence.prefilled, take))
            room -= take
        return plan

    def finish(self, sequence: Sequence) -> None:
        """Forget a sequence and return its bytes."""
        if sequence in self.running:
            self.running.remove(sequence)
        elif sequence in self.waiting:
            self.waiting.remove(sequence)
        self.budget.release(sequence.id)
