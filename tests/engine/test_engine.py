"""The engine batches requests without changing what each one generates, and accounts KV bytes."""

from __future__ import annotations

import copy
import queue
import threading
import time

import pytest
import torch

from trillium.engine import (
    CapacityExceededError,
    Engine,
    EngineConfig,
    Failed,
    Finished,
    GenerationRequest,
    Prefilled,
    RequestRejectedError,
    Started,
    Token,
)
from trillium.engine.attention import decode_attention, decode_attention_reference
from trillium.engine.kv import CompressedLayerKV, DenseLayerKV
from trillium.kvcompress import TokenLayout
from trillium.kvcompress.policies.snapkv import SnapKV
from trillium.kvcompress.registry import make_policy

from .conftest import VOCAB


def _prompt(length: int, seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (length,), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def engine_factory():
    engines = []

    def make(model, **config) -> Engine:
        config.setdefault("kv_cache_bytes", 10**9)
        engine = Engine(copy.deepcopy(model), EngineConfig(**config))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


MIXED = [  # (policy, budget, prompt length)
    (None, 1.0, 45),
    ("snapkv", 0.3, 97),
    ("adakv", 0.25, 130),
    ("adakv", 0.5, 64),
    ("pyramidkv", 0.4, 81),
    ("h2o", 0.3, 120),
    ("streaming_llm", 0.2, 70),
    ("snapkv", 0.6, 50),
]


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_qwen2"])
def test_batch_of_mixed_policies_equals_each_alone(model_name, request, engine_factory, run_alone):
    """Token for token: 8 requests (full cache, uniform and ragged caches, H2O's accumulated
    scores) with prompts spread over 2-5 chunks of a 32-token step budget."""
    model = request.getfixturevalue(model_name)
    prompts = [_prompt(length, seed) for seed, (_, _, length) in enumerate(MIXED)]
    expected = [
        run_alone(model, p, TokenLayout.text(len(p)), name, budget, 10)
        for p, (name, budget, _) in zip(prompts, MIXED)
    ]
    steps = []
    engine = engine_factory(model, max_batched_tokens=32, max_prefilling=2)
    engine.on_step = lambda _engine, plan, _seconds: steps.append(plan.tokens)
    requests = [
        GenerationRequest(
            prompt_ids=p, policy=make_policy(name, budget=budget) if name else None, max_new_tokens=10
        )
        for p, (name, budget, _) in zip(prompts, MIXED)
    ]
    results = engine.generate(requests)
    assert [r.tokens.tolist() for r in results] == expected
    assert max(steps) <= 32 and len(steps) >= sum(length for *_, length in MIXED) // 32
    assert engine.stats.admitted_max >= 4  # they really ran together
    assert engine.budget.used == 0


def test_multimodal_policies_batched_equal_alone(tiny_qwen2, av_layout, engine_factory, run_alone):
    names = [("acckv", 0.3), ("flowmm", 0.3), ("purekv", 0.3), ("madakv", 0.2), (None, 1.0)]
    prompts = [_prompt(len(av_layout), 10 + i) for i in range(len(names))]
    expected = [run_alone(tiny_qwen2, p, av_layout, n, b, 8) for p, (n, b) in zip(prompts, names)]
    engine = engine_factory(tiny_qwen2, max_batched_tokens=24, max_prefilling=3)
    results = engine.generate(
        GenerationRequest(
            prompt_ids=p, layout=av_layout, policy=make_policy(n, budget=b) if n else None, max_new_tokens=8
        )
        for p, (n, b) in zip(prompts, names)
    )
    assert [r.tokens.tolist() for r in results] == expected


def test_sampling_with_a_seed_equals_alone(tiny_llama, engine_factory, run_alone):
    prompt = _prompt(40, 3)
    sampling = {"temperature": 0.9, "top_p": 0.9, "seed": 7}
    expected = run_alone(tiny_llama, prompt, TokenLayout.text(40), "snapkv", 0.5, 12, **sampling)
    engine = engine_factory(tiny_llama)
    other = GenerationRequest(prompt_ids=_prompt(60, 4), max_new_tokens=12)
    mine = GenerationRequest(prompt_ids=prompt, policy=SnapKV(budget=0.5), max_new_tokens=12, **sampling)
    assert engine.generate([other, mine])[1].tokens.tolist() == expected


def test_ragged_cache_decodes_beside_a_full_cache_in_one_step(tiny_qwen2, av_layout, engine_factory):
    """AdaKV's per-head budgets (MadaKV clamps every head alike on this random model, see issue
    notes) decode in the same step as a full cache."""
    engine = engine_factory(tiny_qwen2, max_batched_tokens=256, max_prefilling=2)
    shapes = []

    def record(_engine, plan, _seconds):
        kinds = [(s.request.policy is None, type(s.stores[0]).__name__) for s in plan.decode if s.stores]
        shapes.append(kinds)

    engine.on_step = record
    results = engine.generate(
        [
            GenerationRequest(
                prompt_ids=_prompt(len(av_layout), 1),
                layout=av_layout,
                policy=make_policy("adakv", budget=0.2),
                max_new_tokens=6,
            ),
            GenerationRequest(prompt_ids=_prompt(50, 2), max_new_tokens=6),
        ]
    )
    counts = results[0].report.kept_per_layer_head
    assert any(len(set(heads)) > 1 for heads in counts), counts  # ragged per KV head
    together = [s for s in shapes if len(s) == 2]
    assert together and {(True, "DenseLayerKV"), (False, "CompressedLayerKV")} == set(together[0])


def _events(engine, request):
    events: queue.SimpleQueue = queue.SimpleQueue()
    sequence = engine.submit(request, events.put)
    return sequence, events


def _until(events, kind, timeout=60.0):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = events.get(timeout=deadline - time.monotonic())
        seen.append(event)
        if isinstance(event, kind):
            return event, seen
    raise AssertionError(f"no {kind.__name__} within {timeout} s: {seen}")


def test_compressed_bytes_are_exact_and_admit_more(tiny_llama, engine_factory):
    """After prefill a 25% request holds its kept rows plus the decode tail, nothing else; two
    full-cache requests do not fit a budget that holds one, but the compressed ones do."""
    engine = engine_factory(tiny_llama)
    shape = engine.runner.shape
    full_need = shape.dense_bytes(200 + 300)
    engine.budget.total = 2 * full_need - 1  # one full cache, not two
    request = GenerationRequest(prompt_ids=_prompt(200, 1), policy=SnapKV(budget=0.25), max_new_tokens=8)
    _, events = _events(engine, request)
    prefilled, _ = _until(events, Prefilled)
    kept = shape.num_layers * shape.num_kv_heads * (50 + 8)
    assert engine.budget.reserved and min(engine.budget.reserved.values()) == shape.layer_bytes(kept)
    assert prefilled.report.bytes_after == shape.layer_bytes(shape.num_layers * shape.num_kv_heads * 50)
    _until(events, Finished)
    assert engine.budget.used == 0

    first, events_a = _events(engine, GenerationRequest(prompt_ids=_prompt(200, 2), max_new_tokens=300))
    _until(events_a, Token)
    _, events_b = _events(engine, GenerationRequest(prompt_ids=_prompt(200, 3), max_new_tokens=300))
    time.sleep(0.2)
    assert engine.stats.waiting == 1 and engine.stats.running == 1  # the second full cache waits
    engine.cancel(first)
    _until(events_b, Started)


def test_budget_full_queues_then_times_out_naming_the_limit(tiny_llama, engine_factory):
    engine = engine_factory(tiny_llama, max_queue_seconds=0.3)
    engine.budget.total = engine.runner.shape.dense_bytes(300)
    blocker, events_a = _events(engine, GenerationRequest(prompt_ids=_prompt(100, 1), max_new_tokens=150))
    _until(events_a, Token)
    _, events_b = _events(engine, GenerationRequest(prompt_ids=_prompt(150, 2), max_new_tokens=100))
    failed, seen = _until(events_b, Failed)
    assert not any(isinstance(e, Started) for e in seen)
    assert isinstance(failed.error, CapacityExceededError) and failed.error.limit == "max_queue_seconds"
    assert "max_queue_seconds" in str(failed.error) and "KV bytes in use" in str(failed.error)
    engine.cancel(blocker)
    assert engine.stats.rejections["max_queue_seconds"] == 1


def test_request_larger_than_the_budget_and_a_full_queue_are_refused_at_once(tiny_llama, engine_factory):
    engine = engine_factory(tiny_llama, max_queued_requests=1)
    engine.budget.total = engine.runner.shape.dense_bytes(100)
    with pytest.raises(CapacityExceededError, match="kv_cache_bytes") as too_big:
        engine.submit(GenerationRequest(prompt_ids=_prompt(120, 1), max_new_tokens=4), lambda e: None)
    assert str(engine.budget.total) in str(too_big.value)
    blocker, events = _events(engine, GenerationRequest(prompt_ids=_prompt(30, 1), max_new_tokens=60))
    _until(events, Token)
    _events(engine, GenerationRequest(prompt_ids=_prompt(50, 2), max_new_tokens=4))  # waits
    with pytest.raises(CapacityExceededError, match="max_queued_requests"):
        engine.submit(GenerationRequest(prompt_ids=_prompt(80, 3), max_new_tokens=4), lambda e: None)
    engine.cancel(blocker)


def test_cancel_returns_the_bytes_at_once(tiny_llama, engine_factory):
    engine = engine_factory(tiny_llama)
    sequence, events = _events(
        engine, GenerationRequest(prompt_ids=_prompt(80, 1), policy=SnapKV(budget=0.5), max_new_tokens=400)
    )
    _until(events, Token)
    assert engine.budget.used > 0
    engine.cancel(sequence)
    deadline = time.monotonic() + 10
    while engine.budget.used and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.budget.used == 0 and engine.stats.finished.get("abort") == 1


def test_prefill_stops_within_one_chunk_of_a_cancel(tiny_llama, engine_factory):
    engine = engine_factory(tiny_llama, max_batched_tokens=16)
    chunks = []
    gate = threading.Event()

    def slow(_engine, plan, _seconds):
        chunks.extend(c.start for c in plan.prefill)
        gate.wait(timeout=5)

    engine.on_step = slow
    sequence, events = _events(engine, GenerationRequest(prompt_ids=_prompt(400, 1), max_new_tokens=4))
    _until(events, Started)
    engine.cancel(sequence)
    gate.set()
    deadline = time.monotonic() + 10
    while engine.budget.used and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.budget.used == 0
    assert len(chunks) <= 2  # the chunk running at the cancel, at most one more; 25 in all otherwise


def test_limits_before_work(tiny_llama, engine_factory):
    engine = engine_factory(tiny_llama, max_new_tokens_limit=32)
    with pytest.raises(RequestRejectedError, match=r"510 prompt|510 tokens") as long_prompt:
        engine.submit(GenerationRequest(prompt_ids=_prompt(510, 1), max_new_tokens=8), lambda e: None)
    assert "512" in str(long_prompt.value) and long_prompt.value.field == "prompt"
    with pytest.raises(RequestRejectedError, match="max_new_tokens_limit") as too_many:
        engine.submit(GenerationRequest(prompt_ids=_prompt(10, 1), max_new_tokens=33), lambda e: None)
    assert too_many.value.field == "max_new_tokens" and "33" in str(too_many.value)
    video_only = TokenLayout.concat([TokenLayout.text(4), TokenLayout.video(1, 2, 3)])
    with pytest.raises(RequestRejectedError, match="audio") as bad_layout:
        engine.submit(
            GenerationRequest(
                prompt_ids=_prompt(10, 1),
                layout=video_only,
                policy=make_policy("acckv", budget=0.2),
                max_new_tokens=4,
            ),
            lambda e: None,
        )
    assert bad_layout.value.field == "compression"
    assert engine.stats.steps == 0


def test_a_failing_policy_fails_its_request_only(tiny_llama, engine_factory):
    class Broken(SnapKV):
        def compress_layer(self, inputs):
            raise RuntimeError("scoring blew up")

    engine = engine_factory(tiny_llama)
    _, broken = _events(
        engine, GenerationRequest(prompt_ids=_prompt(60, 1), policy=Broken(budget=0.3), max_new_tokens=4)
    )
    _, healthy = _events(engine, GenerationRequest(prompt_ids=_prompt(60, 2), max_new_tokens=4))
    failed, _ = _until(broken, Failed)
    assert "scoring blew up" in str(failed.error)
    finished, _ = _until(healthy, Finished)
    assert len(finished.result.tokens) == 4
    assert engine.budget.used == 0


def _stores(seed: int):
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    dense = DenseLayerKV(2, 40, 8, torch.float64, torch.device("cpu"))
    dense.append(rand(2, 17, 8), rand(2, 17, 8))
    uniform = CompressedLayerKV([rand(9, 8), rand(9, 8)], [rand(9, 8), rand(9, 8)], 30, 4)
    ragged = CompressedLayerKV([rand(3, 8), rand(12, 8)], [rand(3, 8), rand(12, 8)], 30, 4)
    for store in (uniform, ragged):
        store.append(rand(2, 1, 8), rand(2, 1, 8))
    return [dense, uniform, ragged]


@pytest.mark.parametrize("backend", ["views", "packed"])
def test_decode_attention_backends_match_the_reference(backend):
    stores = _stores(0)
    queries = torch.randn(3, 6, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = decode_attention(queries, stores, 0.35, backend=backend)
    tolerance = 1e-10 if backend == "views" else 1e-6  # the packed torch kernel scores in float32
    expected = decode_attention_reference(queries, stores, 0.35)
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)


def test_prompt_chunks_shrink_while_streams_decode(tiny_llama, engine_factory):
    """A prompt gets the whole step budget when nothing decodes, and at most
    ``max_prefill_tokens_while_decoding`` tokens a step once a stream decodes."""
    engine = engine_factory(tiny_llama, max_batched_tokens=128, max_prefill_tokens_while_decoding=8)
    plans = []
    engine.on_step = lambda _engine, plan, _seconds: plans.append(
        (len(plan.decode), [c.length for c in plan.prefill])
    )
    decoding, events = _events(engine, GenerationRequest(prompt_ids=_prompt(20, 1), max_new_tokens=60))
    _until(events, Token)
    _, late = _events(engine, GenerationRequest(prompt_ids=_prompt(200, 2), max_new_tokens=2))
    _until(late, Finished)
    engine.cancel(decoding)
    assert plans[0] == (0, [20])  # alone: the whole prompt in one step
    mixed = [chunks for decodes, chunks in plans if decodes and chunks]
    assert mixed and all(sum(chunks) <= 8 for chunks in mixed) and max(sum(c) for c in mixed) == 8
