"""Sync and asyncio clients: stream an answer's text deltas, keep the prefill summary and usage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field

import grpc

from trillium.inference.v1 import inference_pb2, inference_pb2_grpc
from trillium.servicekit.client import bearer_metadata, open_channel, open_sync_channel

__all__ = ["Answer", "AsyncInferenceClient", "InferenceClient", "build_request"]


@dataclass
class Answer:
    """What one Generate returned: the text, the compression summary, usage and timing."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    summary: inference_pb2.CompressionSummary | None = None
    prompt_tokens: int = 0
    finished: inference_pb2.GenerationFinished | None = None

    def take(self, response: inference_pb2.GenerateResponse) -> str:
        """Fold one response in; returns its text delta ('' for the other events)."""
        kind = response.WhichOneof("event")
        if kind == "prefill":
            self.summary = response.prefill.compression
            self.prompt_tokens = response.prefill.prompt_tokens
        elif kind == "delta":
            self.text += response.delta.text
            self.token_ids.extend(response.delta.token_ids)
            return response.delta.text
        elif kind == "finished":
            self.finished = response.finished
        return ""


def build_request(
    model: str,
    segments: Sequence[inference_pb2.Segment],
    *,
    policy: str = "none",
    budget: float = 1.0,
    max_new_tokens: int = 0,
    temperature: float = 0.0,
    top_p: float = 0.0,
    seed: int = 0,
    stop: Sequence[str] = (),
    session_id: str = "",
    ignore_eos: bool = False,
) -> inference_pb2.GenerateRequest:
    """A ``GenerateRequest``; ``policy="none"`` keeps the full cache, ``budget`` is the kept ratio."""
    return inference_pb2.GenerateRequest(
        model=model,
        segments=list(segments),
        session_id=session_id,
        compression=inference_pb2.CompressionConfig(policy=policy, budget=inference_pb2.Budget(ratio=budget)),
        generation=inference_pb2.GenerationParams(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=list(stop),
            ignore_eos=ignore_eos,
        ),
        return_token_ids=True,
    )


class InferenceClient:
    """A blocking client (``with InferenceClient(target) as client: ...``)."""

    def __init__(
        self, target: str, *, token: str = "", credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self.channel = open_sync_channel(target, credentials)
        self.stub = inference_pb2_grpc.InferenceServiceStub(self.channel)
        self.metadata = bearer_metadata(token)
        self.last = Answer()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def stream(
        self,
        model: str,
        segments: Sequence[inference_pb2.Segment],
        *,
        timeout: float | None = None,
        **options,
    ) -> Iterator[str]:
        """Text deltas as they arrive; ``self.last`` holds the whole :class:`Answer` meanwhile."""
        self.last = Answer()
        request = build_request(model, segments, **options)
        for response in self.stub.Generate(request, timeout=timeout, metadata=self.metadata):
            delta = self.last.take(response)
            if delta:
                yield delta

    def generate(self, model: str, segments: Sequence[inference_pb2.Segment], **options) -> Answer:
        for _ in self.stream(model, segments, **options):
            pass
        return self.last

    def models(self) -> list[inference_pb2.ModelInfo]:
        return list(self.stub.ListModels(inference_pb2.ListModelsRequest(), metadata=self.metadata).models)


class AsyncInferenceClient:
    """The asyncio twin of :class:`InferenceClient` (``async with``)."""

    def __init__(
        self, target: str, *, token: str = "", credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self.channel = open_channel(target, credentials)
        self.stub = inference_pb2_grpc.InferenceServiceStub(self.channel)
        self.metadata = bearer_metadata(token)

    async def __aenter__(self) -> AsyncInferenceClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()

    async def stream(
        self,
        model: str,
        segments: Sequence[inference_pb2.Segment],
        answer: Answer | None = None,
        *,
        timeout: float | None = None,
        **options,
    ) -> AsyncIterator[str]:
        """Text deltas; pass an :class:`Answer` to collect the summary, usage and timing."""
        answer = answer if answer is not None else Answer()
        request = build_request(model, segments, **options)
        async for response in self.stub.Generate(request, timeout=timeout, metadata=self.metadata):
            delta = answer.take(response)
            if delta:
                yield delta

    async def generate(self, model: str, segments: Sequence[inference_pb2.Segment], **options) -> Answer:
        answer = Answer()
        async for _ in self.stream(model, segments, answer, **options):
            pass
        return answer
