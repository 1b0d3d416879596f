"""InferenceService over real gRPC with a real Redis: policies, models, sessions."""

from __future__ import annotations

import time

import grpc
import pytest
import redis

from trillium.common.v1 import values_pb2
from trillium.inference.service.app import build_definition
from trillium.inference.service.catalogue import MODELS_DIR_ENV
from trillium.inference.service.policies import policy_from_request
from trillium.inference.service.settings import InferenceSettings
from trillium.inference.v1 import inference_pb2, inference_pb2_grpc
from trillium.kvcompress.registry import POLICIES
from trillium.servicekit.background import BackgroundService
from trillium.servicekit.client import open_sync_channel
from trillium.servicekit.settings import ServiceSettings
from trillium.servicekit.testing import RedisServer

from .conftest import save_tiny_text_model


@pytest.fixture(scope="module")
def redis_server():
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    save_tiny_text_model(root / "tiny")
    (root / "not-a-model").mkdir()
    return root


@pytest.fixture(scope="module")
def stub(redis_server, models_dir):
    mp = pytest.MonkeyPatch()
    mp.setenv(MODELS_DIR_ENV, str(models_dir))
    settings = ServiceSettings(port=0, metrics_port=-1, drain_seconds=0, redis_url=redis_server.url)
    with BackgroundService(build_definition(settings), settings) as service:
        service.wait_ready()
        with open_sync_channel(service.target) as channel:
            yield inference_pb2_grpc.InferenceServiceStub(channel)
    mp.undo()


def test_every_registered_policy_is_listed_with_its_parameters(stub):
    response = stub.ListCompressionPolicies(inference_pb2.ListCompressionPoliciesRequest())
    listed = {p.name: p for p in response.policies}
    assert set(listed) == set(POLICIES)
    snapkv = listed["snapkv"]
    assert snapkv.paper == "arXiv 2404.14469"
    budget = next(p for p in snapkv.parameters if p.name == "budget")
    assert budget.type == values_pb2.PARAMETER_TYPE_NUMBER
    assert inference_pb2.MODALITY_AUDIO in listed["acckv"].modalities
    assert listed["look_m"].merges_tokens and not listed["snapkv"].merges_tokens


def test_models_are_listed_from_their_configs(stub):
    models = stub.ListModels(inference_pb2.ListModelsRequest()).models
    assert [m.name for m in models] == ["tiny"]
    tiny = models[0]
    assert (tiny.num_layers, tiny.num_kv_heads, tiny.head_dim, tiny.max_context_tokens) == (2, 2, 8, 1024)
    assert list(tiny.modalities) == [inference_pb2.MODALITY_TEXT]
    assert tiny.architecture == "LlamaForCausalLM" and tiny.revision


def test_a_causal_lm_answers_a_chat_prompt_like_a_direct_call(stub, models_dir):
    """The text path: the tokenizer's chat template, the engine, incremental detokenisation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trillium.kvcompress import TokenLayout, generate_with_policy, make_policy

    question = "what is the capital of france ?"
    req = inference_pb2.GenerateRequest(
        model="tiny",
        segments=[inference_pb2.Segment(text=question)],
        compression=inference_pb2.CompressionConfig(policy="snapkv", budget={"ratio": 0.5}),
        generation=inference_pb2.GenerationParams(max_new_tokens=8),
        return_token_ids=True,
    )
    responses = list(stub.Generate(req, timeout=60))
    prefill = responses[0].prefill
    deltas = [r.delta for r in responses if r.WhichOneof("event") == "delta"]
    tokenizer = AutoTokenizer.from_pretrained(models_dir / "tiny")
    model = AutoModelForCausalLM.from_pretrained(models_dir / "tiny").eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
    ids = torch.tensor(ids["input_ids"] if hasattr(ids, "keys") else ids).unsqueeze(0)
    assert prefill.prompt_tokens == ids.shape[1] == 9
    expected = generate_with_policy(
        model,
        input_ids=ids,
        layout=TokenLayout.text(ids.shape[1]),
        policy=make_policy("snapkv", budget=0.5),
        max_new_tokens=8,
        eos_token_id=1,
        show_progress=False,
    ).tokens.tolist()
    streamed = [d.token_ids[0] for d in deltas]
    assert streamed == [t for t in expected if t != 1]
    assert "".join(d.text for d in deltas) == tokenizer.decode(streamed, skip_special_tokens=True)


def test_session_get_and_delete_read_redis(stub, redis_server):
    now = time.time()
    redis.Redis.from_url(redis_server.url).hset(
        "trillium:inference:v1:{s:chat-1}:meta",
        mapping={
            "schema": "1",
            "model": "tiny",
            "policy": "snapkv",
            "original_tokens": 900,
            "kept_tokens": 180,
            "next_position": 905,
            "turns": 2,
            "seen_video": 800,
            "kept_video": 120,
            "created_at": now,
            "last_access": now,
        },
    )
    session = stub.GetSession(inference_pb2.GetSessionRequest(session_id="chat-1"))
    assert (session.model, session.policy, session.kept_tokens, session.next_position) == (
        "tiny",
        "snapkv",
        180,
        905,
    )
    assert (
        session.per_modality[0].modality == inference_pb2.MODALITY_VIDEO
        and session.per_modality[0].kept == 120
    )
    assert session.expires_at.seconds - session.last_access.seconds == 1800
    assert stub.DeleteSession(inference_pb2.DeleteSessionRequest(session_id="chat-1")).deleted
    with pytest.raises(grpc.RpcError) as info:
        stub.GetSession(inference_pb2.GetSessionRequest(session_id="chat-1"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("session_id", ["", "has space", "x" * 500, "{s:evil}"])
def test_bad_session_ids_are_invalid_argument(stub, session_id):
    with pytest.raises(grpc.RpcError) as info:
        stub.GetSession(inference_pb2.GetSessionRequest(session_id=session_id))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("session_id:")


def test_ignore_eos_generates_exactly_max_new_tokens(stub):
    from trillium.inference.client import build_request, text

    request = build_request("tiny", [text("w1 w2 w3")], max_new_tokens=40, ignore_eos=True, stop=["w5"])
    responses = list(stub.Generate(request, timeout=60))
    deltas = [r.delta for r in responses if r.WhichOneof("event") == "delta"]
    finished = responses[-1].finished
    assert len(deltas) == 40 == finished.usage.completion_tokens
    assert finished.finish_reason == inference_pb2.FINISH_REASON_LENGTH


def test_serve_exits_2_naming_a_corrupt_checkpoint(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    save_tiny_text_model(tmp_path / "broken")
    weights = tmp_path / "broken" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    command = Path(sys.executable).parent / "trillium-inference"
    done = subprocess.run(
        [str(command), "serve", "--port", "0", "--metrics-port", "-1", "--models-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and str(weights) in done.stderr


def test_start_up_names_a_missing_or_corrupt_checkpoint(tmp_path):
    save_tiny_text_model(tmp_path / "broken")
    weights = tmp_path / "broken" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    settings = ServiceSettings(port=0, metrics_port=-1)
    with pytest.raises(ValueError, match="truncated") as truncated:
        build_definition(settings, InferenceSettings(models_dir=str(tmp_path)))
    assert str(weights) in str(truncated.value)
    config = tmp_path / "models.yaml"
    config.write_text(f"models:\n  - name: gone\n    path: {tmp_path / 'nowhere'}\n    kind: causal-lm\n")
    with pytest.raises(ValueError, match="nowhere"):
        build_definition(settings, InferenceSettings(models_config=str(config)))


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"policy": "nope", "budget": {"ratio": 0.2}}, "compression.policy"),
        ({"policy": "snapkv", "budget": {"ratio": 1.5}}, "compression.budget.ratio"),
        ({"policy": "snapkv", "budget": {"tokens": 0}}, "compression.budget.tokens"),
        ({"policy": "snapkv"}, "compression.budget"),
        (
            {"policy": "snapkv", "budget": {"ratio": 0.2}, "parameters": {"bogus": {"integer": 3}}},
            "compression.parameters['bogus']",
        ),
    ],
)
def test_bad_compression_config_names_the_field(config, field):
    from trillium.servicekit.errors import ValidationError

    with pytest.raises(ValidationError) as info:
        policy_from_request(inference_pb2.CompressionConfig(**config))
    assert info.value.field == field


def test_compression_config_builds_the_policy():
    policy = policy_from_request(inference_pb2.CompressionConfig(policy="snapkv", budget={"ratio": 0.25}))
    assert policy.name == "snapkv" and policy.budget == 0.25
    assert policy_from_request(inference_pb2.CompressionConfig(policy="none")) is None
