"""Generate over real gRPC (loopback) with a real Redis, on a tiny random av-tiny model saved to disk.

The model is a 2-layer decoder with random weights and random codebooks (deterministic seeds), so the
tests assert flow, accounting and equality with a direct ``generate_with_policy`` call — never answers.
"""

from __future__ import annotations

import io
import json
import time

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from trillium.common.v1 import media_pb2, values_pb2
from trillium.inference.service.app import build_definition
from trillium.inference.service.catalogue import MODELS_DIR_ENV
from trillium.inference.service.inputs import build_av_inputs
from trillium.inference.service.sparse import MAX_BLOCK_SIZE
from trillium.inference.v1 import inference_pb2, inference_pb2_grpc
from trillium.kvcompress import generate_with_policy, make_policy
from trillium.kvcompress.policies.composed import ComposedPolicy
from trillium.kvcompress.policies.st_sparse import STSparsePrefill
from trillium.kvcompress.sparse_prefill import STSparseParams
from trillium.models.av_tiny import AVTinyProcessor, DecoderSize, build_model, embed_inputs
from trillium.models.av_tiny.features import FeatureConfig
from trillium.servicekit.background import BackgroundService
from trillium.servicekit.client import open_sync_channel
from trillium.servicekit.parameters import to_parameter
from trillium.servicekit.settings import ServiceSettings
from trillium.servicekit.testing import RedisServer

from .conftest import save_tiny_text_model

torch.set_num_threads(1)
MODEL = "av-mini"
SIZE = DecoderSize(hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64, max_positions=4096)
TIMEOUT = 60.0


def save_tiny_av_model(folder) -> None:
    """A random av-tiny (processor with random codebooks + 2-layer decoder) saved like the shipped one."""
    features = FeatureConfig()
    generator = torch.Generator().manual_seed(0)
    processor = AVTinyProcessor(
        torch.rand(16, features.video_dim, generator=generator),
        torch.randn(8, features.n_mels, generator=generator),
        features,
    )
    processor.save_pretrained(folder)
    config = json.loads((folder / "processor_config.json").read_text())
    config["modalities"] = ["text", "video", "audio"]
    (folder / "processor_config.json").write_text(json.dumps(config))
    build_model(processor, SIZE, seed=0).save_pretrained(folder)


def png(seed: int, size: int = 16) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def image(seed: int, size: int = 16) -> media_pb2.Image:
    return media_pb2.Image(encoding=media_pb2.IMAGE_ENCODING_PNG, data=png(seed, size))


def audio(seconds: float = 0.5, rate: int = 16000) -> media_pb2.Audio:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2")
    return media_pb2.Audio(
        encoding=media_pb2.AUDIO_ENCODING_PCM_S16LE, data=pcm.tobytes(), sample_rate_hz=rate, channels=1
    )


def segments(frames: int = 3) -> list[inference_pb2.Segment]:
    return [
        inference_pb2.Segment(text="the red square is at the top"),
        inference_pb2.Segment(video=inference_pb2.Video(frames=[image(i) for i in range(frames)], fps=2)),
        inference_pb2.Segment(audio=audio()),
        inference_pb2.Segment(text="what colour was the object at t1 ?"),
    ]


def request(**overrides) -> inference_pb2.GenerateRequest:
    fields = {
        "model": MODEL,
        "segments": segments(),
        "compression": inference_pb2.CompressionConfig(policy="snapkv", budget={"ratio": 0.5}),
        "generation": inference_pb2.GenerationParams(max_new_tokens=6),
        "return_token_ids": True,
    }
    fields.update(overrides)
    return inference_pb2.GenerateRequest(**fields)


def sparse_config(
    policy: str = "snapkv", enabled: bool = True, **parameters
) -> inference_pb2.CompressionConfig:
    """A compression config with ST-SpAttn sparse prefill and the given ``STSparseParams`` values."""
    return inference_pb2.CompressionConfig(
        policy=policy,
        budget={"ratio": 0.5} if policy != "none" else None,
        sparse_prefill=inference_pb2.SparsePrefill(
            enabled=enabled, parameters={k: to_parameter(v) for k, v in parameters.items()}
        ),
    )


def split(responses) -> tuple[list[str], list, list, list]:
    kinds = [r.WhichOneof("event") for r in responses]
    prefill = [r.prefill for r in responses if r.HasField("prefill")]
    deltas = [r.delta for r in responses if r.HasField("delta")]
    finished = [r.finished for r in responses if r.HasField("finished")]
    return kinds, prefill, deltas, finished


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    (root / MODEL).mkdir()
    save_tiny_av_model(root / MODEL)
    save_tiny_text_model(root / "text-only")
    return root


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def service(redis_server, models_dir):
    mp = pytest.MonkeyPatch()
    mp.setenv(MODELS_DIR_ENV, str(models_dir))
    settings = ServiceSettings(port=0, metrics_port=-1, drain_seconds=0, redis_url=redis_server.url)
    try:
        with BackgroundService(build_definition(settings), settings) as running:
            running.wait_ready()
            yield running
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def stub(service):
    with open_sync_channel(service.target) as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)


@pytest.fixture(scope="module")
def direct(models_dir):
    """``generate_with_policy`` called in-process on the same folder and the same request."""
    from trillium.models.av_tiny import load_av_tiny

    model, processor = load_av_tiny(models_dir / MODEL)

    def run(req: inference_pb2.GenerateRequest, policy):
        inputs = build_av_inputs(processor, list(req.segments))
        with torch.no_grad():
            embeds = embed_inputs(model, inputs.input_ids, inputs.aux_ids)
        return generate_with_policy(
            model,
            inputs_embeds=embeds,
            layout=inputs.layout,
            policy=policy,
            max_new_tokens=req.generation.max_new_tokens,
            eos_token_id=processor.token_id("<eos>"),
            show_progress=False,
        )

    return run


def test_greedy_stream_matches_a_direct_call(stub, direct, service):
    req = request()
    responses = list(stub.Generate(req, timeout=TIMEOUT))
    kinds, (prefill,), deltas, (finished,) = split(responses)
    assert kinds[0] == "prefill" and kinds[-1] == "finished" and set(kinds[1:-1]) == {"delta"}
    expected = direct(req, make_policy("snapkv", budget=0.5))
    assert not expected.stopped_by_eos  # the fixture's seeds give a run without eos
    assert [d.token_ids[0] for d in deltas] == expected.tokens.tolist()
    assert [d.index for d in deltas] == list(range(len(deltas)))
    assert len(deltas) == 6 and finished.finish_reason == inference_pb2.FINISH_REASON_LENGTH
    assert prefill.model == MODEL and prefill.prompt_tokens == expected.report.prompt_length
    assert prefill.compression.kv_bytes_before == expected.report.bytes_before
    assert prefill.compression.kv_bytes_after == expected.report.bytes_after
    assert (finished.usage.prompt_tokens, finished.usage.completion_tokens) == (prefill.prompt_tokens, 6)
    assert finished.usage.total_tokens == prefill.prompt_tokens + 6
    assert finished.timing.total_seconds >= finished.timing.prefill_seconds > 0
    registry = service.runtime.registry
    assert registry.get_sample_value("inference_generation_tokens_total", {"model": MODEL}) >= 6
    assert (
        registry.get_sample_value("inference_requests_total", {"model": MODEL, "finish_reason": "length"})
        >= 1
    )
    assert registry.get_sample_value("inference_prefill_seconds_count", {"policy": "snapkv"}) >= 1


def test_max_new_tokens_bounds_the_stream(stub):
    small = request(generation=inference_pb2.GenerationParams(max_new_tokens=3), return_token_ids=False)
    _, _, deltas, (finished,) = split(list(stub.Generate(small, timeout=TIMEOUT)))
    assert 1 <= len(deltas) <= 3 and all(not d.token_ids and d.text for d in deltas)
    assert finished.usage.completion_tokens <= 3


def test_stop_string_ends_with_stop(stub, direct):
    texts = [d.text for d in split(list(stub.Generate(request(), timeout=TIMEOUT)))[2]]
    stop = texts[2]
    first = next(i for i in range(len(texts)) if " ".join(texts[: i + 1]).endswith(stop))
    stopped = request(generation=inference_pb2.GenerationParams(max_new_tokens=6, stop=[stop]))
    _, _, deltas, (finished,) = split(list(stub.Generate(stopped, timeout=TIMEOUT)))
    assert [d.text for d in deltas] == texts[: first + 1]
    assert finished.finish_reason == inference_pb2.FINISH_REASON_STOP


def test_twenty_percent_budget_is_reported_per_modality_and_layer(stub):
    req = request(compression=inference_pb2.CompressionConfig(policy="snapkv", budget={"ratio": 0.2}))
    _, (prefill,), _, _ = split(list(stub.Generate(req, timeout=TIMEOUT)))
    summary = prefill.compression
    assert summary.policy == "snapkv" and summary.tokens_before == prefill.prompt_tokens
    assert abs(summary.tokens_kept - 0.2 * summary.tokens_before) <= 1
    assert sum(m.seen for m in summary.per_modality) == summary.tokens_before
    assert sum(m.kept for m in summary.per_modality) == summary.tokens_kept
    modalities = {m.modality for m in summary.per_modality}
    assert modalities == {
        inference_pb2.MODALITY_TEXT,
        inference_pb2.MODALITY_VIDEO,
        inference_pb2.MODALITY_AUDIO,
    }
    assert [layer.layer for layer in summary.per_layer] == [0, 1]
    assert all(len(layer.kept_per_head) == SIZE.kv_heads for layer in summary.per_layer)
    assert summary.kv_bytes_after < summary.kv_bytes_before


def test_no_policy_keeps_the_full_cache(stub, direct):
    req = request(compression=inference_pb2.CompressionConfig(policy="none"))
    _, (prefill,), deltas, _ = split(list(stub.Generate(req, timeout=TIMEOUT)))
    summary = prefill.compression
    assert summary.policy == "none" and summary.tokens_kept == summary.tokens_before
    expected = direct(req, make_policy("streaming_llm", budget=1.0))
    assert [d.token_ids[0] for d in deltas] == expected.tokens.tolist()


def test_sessions_record_turns_in_redis(stub):
    req = request(session_id="chat-7")
    _, (first,), _, (done,) = split(list(stub.Generate(req, timeout=TIMEOUT)))
    assert first.session_id == "chat-7"
    session = stub.GetSession(inference_pb2.GetSessionRequest(session_id="chat-7"))
    assert (session.model, session.policy, session.turns) == (MODEL, "snapkv", 1)
    assert session.original_tokens == first.prompt_tokens
    assert session.kept_tokens == first.compression.tokens_kept
    assert session.next_position == first.prompt_tokens + done.usage.completion_tokens
    assert sum(m.seen for m in session.per_modality) == first.prompt_tokens
    assert session.owner and session.created_at.seconds > 0
    list(stub.Generate(req, timeout=TIMEOUT))
    again = stub.GetSession(inference_pb2.GetSessionRequest(session_id="chat-7"))
    assert again.turns == 2 and again.original_tokens == 2 * first.prompt_tokens
    assert again.created_at == session.created_at


def _raw_image(**fields) -> media_pb2.Image:
    return media_pb2.Image(encoding=media_pb2.IMAGE_ENCODING_RAW_RGB8, **fields)


@pytest.mark.parametrize(
    ("overrides", "code", "field"),
    [
        ({"model": "nope"}, grpc.StatusCode.NOT_FOUND, "model"),
        ({"model": "text-only"}, grpc.StatusCode.INVALID_ARGUMENT, "segments[1]"),
        (
            {"generation": inference_pb2.GenerationParams(max_new_tokens=5000)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "generation.max_new_tokens",
        ),
        (
            {"compression": inference_pb2.CompressionConfig(policy="nope", budget={"ratio": 0.2})},
            grpc.StatusCode.INVALID_ARGUMENT,
            "compression.policy",
        ),
        (
            {"compression": inference_pb2.CompressionConfig(policy="snapkv", budget={"ratio": 1.5})},
            grpc.StatusCode.INVALID_ARGUMENT,
            "compression.budget.ratio",
        ),
        (
            {"generation": inference_pb2.GenerationParams(max_new_tokens=-1)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "generation.max_new_tokens",
        ),
        ({"session_id": "has space"}, grpc.StatusCode.INVALID_ARGUMENT, "session_id"),
        (
            {"compression": sparse_config(blocksize=4)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "compression.sparse_prefill.parameters.blocksize",
        ),
        (
            {"compression": sparse_config(block_size=1.5)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "compression.sparse_prefill.parameters.block_size",
        ),
        (
            {"compression": sparse_config(block_size=0)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "compression.sparse_prefill.parameters.block_size",
        ),
        (
            {"compression": sparse_config(block_size=10**12)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "compression.sparse_prefill.parameters.block_size",
        ),
        (
            {"compression": sparse_config(gamma=1.5)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "compression.sparse_prefill.parameters.gamma",
        ),
        (
            {"compression": sparse_config(delta=float("nan"))},
            grpc.StatusCode.INVALID_ARGUMENT,
            "compression.sparse_prefill.parameters.delta",
        ),
        (
            {"compression": sparse_config(duplicate_source="pixels")},
            grpc.StatusCode.INVALID_ARGUMENT,
            "compression.sparse_prefill.parameters.duplicate_source",
        ),
        (
            {"compression": sparse_config(backend="flex")},
            grpc.StatusCode.INVALID_ARGUMENT,
            "compression.sparse_prefill.parameters.backend",
        ),
        (
            {"compression": sparse_config(enabled=False, gamma="high")},
            grpc.StatusCode.INVALID_ARGUMENT,
            "compression.sparse_prefill.parameters.gamma",
        ),
        (
            {"compression": sparse_config(policy="h2o")},
            grpc.StatusCode.INVALID_ARGUMENT,
            "compression.sparse_prefill.enabled",
        ),
        ({"segments": []}, grpc.StatusCode.INVALID_ARGUMENT, "segments"),
        (
            {
                "segments": [
                    inference_pb2.Segment(
                        image=media_pb2.Image(encoding=media_pb2.IMAGE_ENCODING_PNG, data=b"no")
                    ),
                    inference_pb2.Segment(text="what ?"),
                ]
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            "segments[0].image.data",
        ),
        (
            {"segments": [inference_pb2.Segment(image=_raw_image(data=b"abc", width=4, height=4))]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "segments[0].image.data",
        ),
        (
            {"segments": [inference_pb2.Segment(text="a"), inference_pb2.Segment(image=image(1))]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "segments[1]",
        ),
        (
            {"segments": [inference_pb2.Segment(), inference_pb2.Segment(text="what ?")]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "segments[0]",
        ),
        (
            {"segments": [*segments()[:2], inference_pb2.Segment(audio=audio(rate=12)), segments()[3]]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "segments[2].audio.sample_rate_hz",
        ),
        (
            {"segments": [*segments(frames=65)[:2], segments()[3]]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "segments[1].video.frames[64]",
        ),
    ],
)
def test_bad_requests_name_the_field(stub, overrides, code, field):
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(request(**overrides), timeout=TIMEOUT))
    assert info.value.code() == code
    assert info.value.details().startswith(f"{field}:"), info.value.details()


def test_server_still_answers_after_errors_and_a_cancelled_stream(stub):
    call = stub.Generate(
        request(generation=inference_pb2.GenerationParams(max_new_tokens=200)), timeout=TIMEOUT
    )
    first = [next(call), next(call)]
    assert [r.WhichOneof("event") for r in first] == ["prefill", "delta"]
    call.cancel()
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() == grpc.StatusCode.CANCELLED
    # the cancelled request left the engine: the next one runs
    kinds = split(list(stub.Generate(request(), timeout=TIMEOUT)))[0]
    assert kinds[0] == "prefill" and kinds[-1] == "finished"


def test_a_cancelled_stream_returns_its_kv_bytes(stub, service):
    """The engine's gauge shows the request's reservation while it decodes and 0 once the client
    cancels; the running-requests gauge follows."""
    registry = service.runtime.registry

    def gauge(name):
        return registry.get_sample_value(name, {"model": MODEL})

    call = stub.Generate(
        request(generation=inference_pb2.GenerationParams(max_new_tokens=300)), timeout=TIMEOUT
    )
    assert [next(call).WhichOneof("event") for _ in range(2)] == ["prefill", "delta"]
    deadline = time.monotonic() + TIMEOUT  # the gauges follow at the end of the engine's step
    while not gauge("inference_kv_cache_bytes_used") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gauge("inference_kv_cache_bytes_used") > 0 and gauge("inference_num_requests_running") == 1
    assert 0 < gauge("inference_kv_cache_usage_ratio") < 1
    call.cancel()
    deadline = time.monotonic() + TIMEOUT
    while gauge("inference_kv_cache_bytes_used") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gauge("inference_kv_cache_bytes_used") == 0 and gauge("inference_num_requests_running") == 0
    assert gauge("inference_kv_cache_budget_bytes") > 0


def test_redis_down_is_unavailable_and_generates_nothing(stub, redis_server, service):
    registry = service.runtime.registry
    before = registry.get_sample_value("inference_prompt_tokens_total", {"model": MODEL})
    redis_server.stop()
    try:
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Generate(request(session_id="chat-down"), timeout=TIMEOUT))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert registry.get_sample_value("inference_prompt_tokens_total", {"model": MODEL}) == before
    finally:
        redis_server.start()
    list(stub.Generate(request(session_id="chat-up"), timeout=TIMEOUT))
    assert stub.GetSession(inference_pb2.GetSessionRequest(session_id="chat-up")).turns == 1


def test_seeded_sampling_is_reproducible(stub):
    params = inference_pb2.GenerationParams(max_new_tokens=6, temperature=1.5, top_p=0.9, seed=7)
    runs = [
        [d.token_ids[0] for d in split(list(stub.Generate(request(generation=params), timeout=TIMEOUT)))[2]]
        for _ in range(2)
    ]
    assert runs[0] == runs[1] and len(runs[0]) >= 1
    with pytest.raises(grpc.RpcError) as info:
        list(
            stub.Generate(
                request(generation=inference_pb2.GenerationParams(temperature=-1.0)), timeout=TIMEOUT
            )
        )
    assert info.value.details().startswith("generation.temperature:")


def test_raw_image_and_stereo_float_audio_are_accepted(stub):
    rgb = np.random.default_rng(3).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    stereo = (np.random.default_rng(4).uniform(-0.5, 0.5, (4000, 2))).astype("<f4")
    mixed = [
        inference_pb2.Segment(image=_raw_image(data=rgb.tobytes(), width=24, height=16)),
        inference_pb2.Segment(
            audio=media_pb2.Audio(
                encoding=media_pb2.AUDIO_ENCODING_PCM_F32LE,
                data=stereo.tobytes(),
                sample_rate_hz=8000,
                channels=2,
            )
        ),
        inference_pb2.Segment(text="which sound played ?"),
    ]
    _, (prefill,), _, (finished,) = split(list(stub.Generate(request(segments=mixed), timeout=TIMEOUT)))
    seen = {m.modality: m.seen for m in prefill.compression.per_modality}
    assert seen[inference_pb2.MODALITY_VIDEO] == 2 * 3  # one 16x24 frame = 2x3 patches
    assert seen[inference_pb2.MODALITY_AUDIO] == 5  # 0.5 s at 8 kHz = 5 windows of 800 samples
    assert finished.finish_reason in (inference_pb2.FINISH_REASON_LENGTH, inference_pb2.FINISH_REASON_STOP)


def test_a_session_of_another_model_is_failed_precondition(stub, redis_server):
    import time

    import redis

    now = time.time()
    redis.Redis.from_url(redis_server.url).hset(
        "trillium:inference:v1:{s:chat-other}:meta",
        mapping={"schema": "1", "model": "other", "turns": 3, "created_at": now, "last_access": now},
    )
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(request(session_id="chat-other"), timeout=TIMEOUT))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details().startswith("model:")
    assert stub.GetSession(inference_pb2.GetSessionRequest(session_id="chat-other")).turns == 3


def test_sparse_prefill_reports_the_librarys_density(stub, direct):
    """12 frames, one-token tiles, gamma 0.3, no local frame: ST-SpAttn skips tiles, and the service
    reports exactly the library's own block density for the same prompt (and decodes the same)."""
    parameters = {"block_size": 1, "gamma": 0.3, "local_frames": 0}
    req = request(segments=segments(frames=12), compression=sparse_config(**parameters))
    _, (prefill,), deltas, _ = split(list(stub.Generate(req, timeout=TIMEOUT)))
    summary = prefill.compression
    prefill_attention = STSparsePrefill(STSparseParams(**parameters))
    composed = ComposedPolicy(base=make_policy("snapkv", budget=0.5), prefill=prefill_attention)
    expected = direct(req, composed)
    densities = [plan.block_density() for plan in prefill_attention.plans]
    assert len(densities) == SIZE.layers
    assert summary.sparse_prefill and summary.policy == "snapkv"
    assert 0.0 < summary.prefill_attention_density < 1.0
    assert summary.prefill_attention_density == pytest.approx(sum(densities) / len(densities), abs=1e-12)
    assert [d.token_ids[0] for d in deltas] == expected.tokens.tolist()
    assert summary.tokens_kept == round(expected.report.kept_fraction * expected.report.prompt_length)


def test_dense_plan_decodes_like_the_dense_prefill(stub):
    """gamma >= 1 and delta > 1 keep every causal tile: same greedy tokens as without sparse prefill."""
    for policy in ("snapkv", "none"):
        dense_req = request(
            segments=segments(frames=12),
            compression=sparse_config(policy=policy, enabled=False),
        )
        sparse_req = request(
            segments=segments(frames=12),
            compression=sparse_config(policy=policy, block_size=1, gamma=1.0, delta=2.0, local_frames=0),
        )
        _, (dense,), dense_deltas, _ = split(list(stub.Generate(dense_req, timeout=TIMEOUT)))
        _, (sparse,), sparse_deltas, _ = split(list(stub.Generate(sparse_req, timeout=TIMEOUT)))
        assert not dense.compression.sparse_prefill and dense.compression.prefill_attention_density == 1.0
        assert sparse.compression.sparse_prefill and sparse.compression.prefill_attention_density == 1.0
        assert [d.token_ids[0] for d in sparse_deltas] == [d.token_ids[0] for d in dense_deltas]
        assert sparse.compression.tokens_kept == dense.compression.tokens_kept


def test_sparse_prefill_without_video_stays_dense(stub):
    """No video tokens: every query tile holds text, so ST-SpAttn computes every tile (density 1.0)."""
    text_only = [
        inference_pb2.Segment(text="the red square is at the top of the picture " * 4),
        inference_pb2.Segment(text="where is the square ?"),
    ]
    req = request(segments=text_only, compression=sparse_config(block_size=1, gamma=0.1))
    _, (prefill,), deltas, (finished,) = split(list(stub.Generate(req, timeout=TIMEOUT)))
    assert prefill.compression.sparse_prefill
    assert prefill.compression.prefill_attention_density == 1.0
    assert finished.usage.completion_tokens >= 1


def test_sparse_prefill_parameters_are_listed(stub):
    response = stub.ListCompressionPolicies(inference_pb2.ListCompressionPoliciesRequest())
    listed = {p.name: p for p in response.sparse_prefill_parameters}
    defaults = STSparseParams()
    assert set(listed) == {f for f in STSparseParams.__dataclass_fields__ if f != "backend"}
    block_size, gamma = listed["block_size"], listed["gamma"]
    assert block_size.type == values_pb2.PARAMETER_TYPE_INTEGER
    assert block_size.default_value.integer == defaults.block_size and block_size.minimum == 1
    assert block_size.maximum == MAX_BLOCK_SIZE and "tile" in block_size.description
    assert gamma.type == values_pb2.PARAMETER_TYPE_NUMBER and gamma.default_value.number == defaults.gamma
    assert (gamma.minimum, gamma.maximum) == (0.0, 1.0)
    assert listed["delta"].default_value.number == defaults.delta and not listed["delta"].HasField("minimum")
    assert list(listed["duplicate_source"].choices) == ["keys", "values"]
    assert all(p.description for p in listed.values())
