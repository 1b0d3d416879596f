"""InferenceService over gRPC: a thin layer over the serving engine, the model registry and sessions.

``Generate`` streams one ``PrefillSummary`` (from the kvcompress report), then one ``TokenDelta`` per
generated token, then one ``GenerationFinished``. The request is checked before any model work
(errors name the field: INVALID_ARGUMENT; unknown model: NOT_FOUND; a model still loading:
UNAVAILABLE); the segments become the model's prompt (:mod:`.inputs` for av-tiny, the tokenizer's
chat template for a causal LM) and the generation is submitted to the model's engine
(:mod:`trillium.engine`), which batches it with every other running request. Limits come first: a
prompt longer than the model's context or ``max_new_tokens`` above the server's limit is
INVALID_ARGUMENT; a full queue, a request larger than the whole KV budget or one that waited past
``max_queue_seconds`` is RESOURCE_EXHAUSTED naming the limit. ``eos`` or a stop string ends with
STOP (the eos token is counted in ``usage`` but not streamed; the delta that completes a stop
string is streamed), ``max_new_tokens`` with LENGTH; a client that cancels, or whose deadline
passes, is dropped by the engine at its next step (ABORT in the metrics) and its KV bytes return.

Sparse prefill: ``compression.sparse_prefill.enabled`` runs the prompt pass with PureKV's ST-SpAttn
block-sparse attention (arXiv 2510.25600, ``trillium.kvcompress.sparse_prefill``) under the requested
eviction policy or the full cache; its ``parameters`` are ``STSparseParams`` fields, listed by
ListCompressionPolicies and checked like policy parameters (errors name
``compression.sparse_prefill.parameters.<name>``; see :mod:`.sparse`). ``CompressionSummary`` then
reports ``sparse_prefill=true`` and ``prefill_attention_density``, the library's fraction of causal
attention tiles computed, averaged over layers and KV heads: 1.0 for a prompt without video tokens,
which ST-SpAttn leaves dense. H2O (dense prefill attention weights) cannot be combined with it.

Sessions: with ``session_id`` set, the session's Redis metadata is read before generation (Redis down
-> UNAVAILABLE, nothing generated) and written in one MULTI after it, so GetSession shows it. Each
turn re-prefills its own segments (the KV cache is not reused across turns); the session records the
accounting: ``turns``, cumulative ``original_tokens``/``kept_tokens`` and per-modality
``seen_<m>``/``kept_<m>``, and ``next_position`` = the last turn's prompt + generated tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from trillium.common.v1 import usage_pb2
from trillium.inference.service.catalogue import model_info
from trillium.inference.service.generation import (
    DecodeSettings,
    compression_summary,
    decode_settings,
    ends_with_stop,
    kept_tokens,
    per_modality,
)
from trillium.inference.service.metrics import InferenceMetrics
from trillium.inference.service.policies import MODALITY_BY_LABEL, list_policies_response, policy_from_request
from trillium.inference.service.runtime import (
    Detokenizer,
    Finished,
    LoadedModel,
    ModelRuntime,
    Prefilled,
    Prompt,
    Started,
    Token,
)
from trillium.inference.service.settings import InferenceSettings
from trillium.inference.service.sparse import (
    check_policy_supports_sparse_prefill,
    sparse_params_from_request,
)
from trillium.inference.v1 import inference_pb2, inference_pb2_grpc
from trillium.kvcompress.policies.base import Policy
from trillium.kvcompress.report import CompressionReport
from trillium.kvcompress.sparse_prefill import STSparseParams
from trillium.servicekit.errors import (
    FailedPreconditionError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
    ValidationError,
)
from trillium.servicekit.redis_store import SessionStore, validate_session_id


def _timestamp(seconds: str | None) -> Timestamp | None:
    if not seconds:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(datetime.fromtimestamp(float(seconds), tz=UTC))
    return stamp


def session_message(session_id: str, meta: dict[str, str], ttl_seconds: int) -> inference_pb2.Session:
    """A ``Session`` from its Redis metadata hash (fields per the platform's key schema)."""
    per_modality = []
    for label, modality in MODALITY_BY_LABEL.items():
        seen, kept = meta.get(f"seen_{label}"), meta.get(f"kept_{label}")
        if seen is not None:
            per_modality.append(
                inference_pb2.ModalityTokens(modality=modality, seen=int(seen), kept=int(kept or 0))
            )
    last_access = meta.get("last_access")
    expires = str(float(last_access) + ttl_seconds) if last_access else None
    return inference_pb2.Session(
        session_id=session_id,
        model=meta.get("model", ""),
        policy=meta.get("policy", ""),
        original_tokens=int(meta.get("original_tokens", 0)),
        kept_tokens=int(meta.get("kept_tokens", 0)),
        next_position=int(meta.get("next_position", 0)),
        turns=int(meta.get("turns", 0)),
        per_modality=per_modality,
        owner=meta.get("owner_pod", ""),
        created_at=_timestamp(meta.get("created_at")),
        last_access=_timestamp(last_access),
        expires_at=_timestamp(expires),
    )


FINISH_STOP = inference_pb2.FINISH_REASON_STOP
FINISH_LABELS = {
    inference_pb2.FINISH_REASON_STOP: "stop",
    inference_pb2.FINISH_REASON_LENGTH: "length",
    inference_pb2.FINISH_REASON_ABORT: "abort",
}


def session_update(
    previous: dict[str, str] | None, model: str, policy: str, report: CompressionReport, completion: int
) -> dict[str, str | int | float]:
    """The meta fields of a session after one more turn (accounting as in the module docstring)."""
    previous = previous or {}

    def plus(name: str, value: int) -> int:
        return int(previous.get(name, 0)) + value

    fields: dict[str, str | int | float] = {
        "model": model,
        "policy": policy,
        "original_tokens": plus("original_tokens", report.prompt_length),
        "kept_tokens": plus("kept_tokens", kept_tokens(report)),
        "next_position": report.prompt_length + completion,
        "turns": plus("turns", 1),
        "owner_pod": socket.gethostname(),
    }
    for label, (seen, kept) in per_modality(report).items():
        fields[f"seen_{label}"] = plus(f"seen_{label}", seen)
        fields[f"kept_{label}"] = plus(f"kept_{label}", kept)
    return fields


@dataclass(frozen=True)
class _Job:
    """One generation's model, prompt, policy (None = full cache), decode settings and sparse-prefill
    parameters (None = dense prefill)."""

    loaded: LoadedModel
    prompt: Prompt
    policy: Policy | None
    settings: DecodeSettings
    policy_name: str
    sparse: STSparseParams | None = None


@dataclass
class _Progress:
    """What one Generate call has seen so far (for timing, usage and metrics)."""

    started: float = field(default_factory=time.perf_counter)
    queue_seconds: float = 0.0
    report: CompressionReport | None = None
    prefill_seconds: float = 0.0
    prefilled_at: float = 0.0
    token_times: list[float] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    detokenizer: Detokenizer | None = None
    ignore_eos: bool = False
    finish: int = inference_pb2.FINISH_REASON_UNSPECIFIED

    @property
    def generated(self) -> int:
        return len(self.token_times)

    def timing(self) -> usage_pb2.Timing:
        now = time.perf_counter()
        first = self.token_times[0] if self.token_times else now
        last = self.token_times[-1] if self.token_times else now
        return usage_pb2.Timing(
            queue_seconds=self.queue_seconds,
            prefill_seconds=self.prefill_seconds,
            compression_seconds=self.report.compress_seconds if self.report else 0.0,
            decode_seconds=max(last - self.prefilled_at, 0.0) if self.prefilled_at else 0.0,
            total_seconds=now - self.started,
            time_to_first_token_seconds=first - self.started,
            time_per_output_token_seconds=(last - first) / (self.generated - 1)
            if self.generated > 1
            else 0.0,
        )


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(
        self,
        sessions: SessionStore | None,
        runtime: ModelRuntime,
        metrics: InferenceMetrics | None = None,
        settings: InferenceSettings | None = None,
    ) -> None:
        self.sessions = sessions
        self.runtime = runtime
        self.metrics = metrics
        self.settings = settings or runtime.settings
        self._policies = list_policies_response()

    def _store(self) -> SessionStore:
        if self.sessions is None:
            raise UnavailableError("the session store is not connected yet")
        return self.sessions

    @staticmethod
    def _session_id(session_id: str) -> str:
        try:
            return validate_session_id(session_id)
        except ValueError as exc:
            raise ValidationError("session_id", str(exc).removeprefix("session_id: ")) from None

    async def ListCompressionPolicies(self, request, context):
        return self._policies

    async def ListModels(self, request, context):
        return inference_pb2.ListModelsResponse(
            models=[
                model_info(spec, self.runtime.loaded_config(name))
                for name, spec in self.runtime.specs.items()
            ]
        )

    async def GetSession(self, request, context):
        session_id = self._session_id(request.session_id)
        store = self._store()
        meta = await store.get_meta(session_id, timeout=context.time_remaining())
        if meta is None:
            raise NotFoundError(f"no session {session_id!r} (it may have expired)", field="session_id")
        return session_message(session_id, meta, store.ttl_seconds)

    async def DeleteSession(self, request, context):
        session_id = self._session_id(request.session_id)
        deleted = await self._store().delete(session_id, timeout=context.time_remaining())
        return inference_pb2.DeleteSessionResponse(deleted=deleted)

    async def _previous_session(self, session_id: str, model: str, context) -> dict[str, str] | None:
        meta = await self._store().get_meta(session_id, timeout=context.time_remaining())
        if meta is not None and meta.get("model", model) != model:
            raise FailedPreconditionError(
                f"session {session_id!r} belongs to model {meta['model']!r}", field="model"
            )
        return meta

    async def Generate(self, request, context):
        progress = _Progress()
        if not request.model:
            raise ValidationError("model", "must name a model from ListModels")
        session_id = self._session_id(request.session_id) if request.session_id else ""
        policy = policy_from_request(request.compression)
        sparse = sparse_params_from_request(request.compression.sparse_prefill)
        if sparse is not None:
            check_policy_supports_sparse_prefill(policy, request.compression.policy)
        settings = decode_settings(
            request.generation, self.settings.default_max_new_tokens, self.settings.max_new_tokens_limit
        )
        loaded = await self.runtime.get(request.model)
        prompt = await asyncio.to_thread(loaded.prompt, list(request.segments))
        previous = await self._previous_session(session_id, request.model, context) if session_id else None
        policy_name = request.compression.policy or "none"
        job = _Job(loaded, prompt, policy, settings, policy_name, sparse)
        progress.detokenizer = loaded.detokenizer()
        progress.ignore_eos = settings.ignore_eos
        responses = self._stream(job, request, progress)
        try:
            async with contextlib.aclosing(responses):
                async for response in responses:
                    yield response
        finally:
            if progress.finish == inference_pb2.FINISH_REASON_UNSPECIFIED:
                progress.finish = inference_pb2.FINISH_REASON_ABORT
            self._record_finish(request.model, progress)
        if session_id:
            fields = session_update(previous, request.model, policy_name, progress.report, progress.generated)
            await self._store().put_meta(session_id, fields, timeout=context.time_remaining())
        completion = progress.generated
        prompt = progress.report.prompt_length
        yield inference_pb2.GenerateResponse(
            finished=inference_pb2.GenerationFinished(
                finish_reason=progress.finish,
                usage=usage_pb2.Usage(
                    prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
                ),
                timing=progress.timing(),
            )
        )

    async def _stream(self, job: _Job, request, progress: _Progress):
        """Prefill and delta messages; sets ``progress.finish`` when generation ends normally."""
        events = job.loaded.stream(job.prompt, job.policy, job.settings, sparse=job.sparse)
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    if isinstance(event, Started):
                        progress.queue_seconds = event.queue_seconds
                        if self.metrics:
                            self.metrics.request_queue_time.labels(request.model).observe(event.queue_seconds)
                    elif isinstance(event, Prefilled):
                        yield self._prefilled(event, request, job.policy_name, progress)
                    elif isinstance(event, Token):
                        delta = self._token(event, job.loaded, request, progress)
                        if delta is not None:
                            yield delta
                        if ends_with_stop(progress.detokenizer.text, job.settings.stop):
                            progress.finish = inference_pb2.FINISH_REASON_STOP
                            return
                    elif isinstance(event, Finished):
                        stopped = event.result.stopped_by_eos
                        progress.finish = (
                            inference_pb2.FINISH_REASON_STOP
                            if stopped
                            else inference_pb2.FINISH_REASON_LENGTH
                        )
        except ResourceExhaustedError as exc:
            if self.metrics:
                self.metrics.admission_rejections.labels(request.model, exc.field or "unknown").inc()
            raise

    def _prefilled(self, event: Prefilled, request, policy_name: str, progress: _Progress):
        progress.report, progress.prefill_seconds = event.report, event.seconds
        progress.prefilled_at = time.perf_counter()
        self._record_prefill(request.model, policy_name, event)
        return inference_pb2.GenerateResponse(
            prefill=inference_pb2.PrefillSummary(
                session_id=request.session_id,
                model=request.model,
                prompt_tokens=event.report.prompt_length,
                compression=compression_summary(
                    event.report, policy_name, event.sparse, event.attention_density
                ),
                prefill_seconds=event.seconds,
            )
        )

    def _token(self, event: Token, loaded: LoadedModel, request, progress: _Progress):
        now = time.perf_counter()
        if self.metrics:
            if progress.token_times:
                self.metrics.inter_token_latency.labels(request.model).observe(now - progress.token_times[-1])
            else:
                self.metrics.time_to_first_token.labels(request.model).observe(now - progress.started)
        progress.token_times.append(now)
        if event.token_id in loaded.eos_token_ids and not progress.ignore_eos:
            return None
        text = progress.detokenizer.push(event.token_id)
        progress.texts.append(text)
        return inference_pb2.GenerateResponse(
            delta=inference_pb2.TokenDelta(
                index=len(progress.texts) - 1,
                text=text,
                token_ids=[event.token_id] if request.return_token_ids else [],
            )
        )

    def _record_prefill(self, model: str, policy: str, event: Prefilled) -> None:
        """Prompt, prefill and KV metrics; bytes are split over modalities by their token shares."""
        if not self.metrics:
            return
        m, report = self.metrics, event.report
        m.prompt_tokens.labels(model).inc(report.prompt_length)
        m.prefill_seconds.labels(policy).observe(event.seconds)
        m.kv_compression_seconds.labels(policy).observe(report.compress_seconds)
        m.backend_request_seconds.labels("local").observe(event.seconds)
        kept_entries = report.kept_per_modality
        total_kept = max(sum(kept_entries.values()), 1)
        for label, (seen, kept) in per_modality(report).items():
            m.kv_tokens_seen.labels(label, policy).inc(seen)
            m.kv_tokens_kept.labels(label, policy).inc(kept)
            m.kv_raw_bytes.labels(label, policy).inc(
                report.bytes_before * seen / max(report.prompt_length, 1)
            )
            share = kept_entries.get(label, 0) / total_kept
            m.kv_compressed_bytes.labels(label, policy).inc(report.bytes_after * share)

    def _record_finish(self, model: str, progress: _Progress) -> None:
        if not self.metrics:
            return
        self.metrics.generation_tokens.labels(model).inc(progress.generated)
        self.metrics.requests.labels(model, FINISH_LABELS[progress.finish]).inc()
        self.metrics.e2e_request_latency.labels(model).observe(time.perf_counter() - progress.started)
