"""Load generation over loopback gRPC: closed loop (``c`` clients back to back) and open loop
(Poisson arrivals), with per-request timings, errors by status code and the server's RSS sampled."""

from __future__ import annotations

import asyncio
import random
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc

from trillium.inference.client import build_request, text
from trillium.inference.v1 import inference_pb2_grpc
from trillium.servicekit.client import open_channel


@dataclass
class RequestTiming:
    submitted: float
    first_token: float = 0.0
    token_times: list[float] = field(default_factory=list)
    finished: float = 0.0
    error: str = ""
    prompt_tokens: int = 0

    @property
    def itls(self) -> list[float]:
        return [b - a for a, b in zip(self.token_times, self.token_times[1:])]


@dataclass
class LoadResult:
    timings: list[RequestTiming]
    seconds: float
    rss_samples: list[int]

    @property
    def ok(self) -> list[RequestTiming]:
        return [t for t in self.timings if not t.error]

    def summary(self) -> dict:
        ok = self.ok
        tokens = sum(len(t.token_times) for t in ok)
        ttft = [t.first_token - t.submitted for t in ok if t.first_token]
        itl = [x for t in ok for x in t.itls]
        errors = Counter(t.error for t in self.timings if t.error)
        return {
            "requests": len(self.timings),
            "seconds": round(self.seconds, 3),
            "tokens_per_s": round(tokens / self.seconds, 3) if self.seconds else 0.0,
            "requests_per_s": round(len(ok) / self.seconds, 4) if self.seconds else 0.0,
            "ttft_p50_ms": _ms(percentile(ttft, 50)),
            "ttft_p99_ms": _ms(percentile(ttft, 99)),
            "itl_p50_ms": _ms(percentile(itl, 50)),
            "itl_p99_ms": _ms(percentile(itl, 99)),
            "errors": dict(errors),
            "prompt_tokens": round(statistics.mean(t.prompt_tokens for t in ok)) if ok else 0,
            "peak_rss_bytes": max(self.rss_samples, default=0),
            "rss_first_last_bytes": [self.rss_samples[0], self.rss_samples[-1]] if self.rss_samples else [],
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def rss_bytes(pid: int) -> int:
    for line in open(f"/proc/{pid}/status").read().splitlines():  # noqa: SIM115
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """Samples a process's resident memory every ``period`` seconds on a thread."""

    def __init__(self, pid: int, period: float = 0.5) -> None:
        self.pid, self.period, self.samples = pid, period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(rss_bytes(self.pid))
            except OSError:
                return
            self._stop.wait(self.period)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def one_request(stub, request, timing: RequestTiming, timeout: float) -> None:
    try:
        async for response in stub.Generate(request, timeout=timeout):
            kind = response.WhichOneof("event")
            now = time.perf_counter()
            if kind == "prefill":
                timing.prompt_tokens = response.prefill.prompt_tokens
            elif kind == "delta":
                if not timing.first_token:
                    timing.first_token = now
                timing.token_times.append(now)
    except grpc.aio.AioRpcError as exc:
        timing.error = exc.code().name
    timing.finished = time.perf_counter()


def make_request(model: str, prompt: str, policy: str, budget: float, max_new_tokens: int):
    """A text request generating exactly ``max_new_tokens`` (``ignore_eos``), as every anchor does."""
    return build_request(
        model, [text(prompt)], policy=policy, budget=budget, max_new_tokens=max_new_tokens, ignore_eos=True
    )


async def closed_loop(target: str, requests: list, concurrency: int, timeout: float = 900.0) -> LoadResult:
    """``concurrency`` clients, each sending its next request when its last one finished."""
    channel = open_channel(target)
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    pending = list(enumerate(requests))
    timings: list[RequestTiming] = [RequestTiming(0.0) for _ in requests]

    async def client() -> None:
        while pending:
            index, request = pending.pop(0)
            timings[index] = RequestTiming(time.perf_counter())
            await one_request(stub, request, timings[index], timeout)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    await channel.close()
    return LoadResult(timings, seconds, [])


async def open_loop(
    target: str, requests: list, rate: float, seed: int = 0, timeout: float = 900.0
) -> LoadResult:
    """Requests arriving as a Poisson process of ``rate`` per second, whatever is running."""
    channel = open_channel(target)
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    rng = random.Random(seed)
    tasks, timings = [], []
    started = time.perf_counter()
    for request in requests:
        timing = RequestTiming(time.perf_counter())
        timings.append(timing)
        tasks.append(asyncio.create_task(one_request(stub, request, timing, timeout)))
        await asyncio.sleep(rng.expovariate(rate))
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - started
    await channel.close()
    return LoadResult(timings, seconds, [])
