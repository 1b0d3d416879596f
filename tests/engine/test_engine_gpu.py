"""The engine on CUDA: the same requests give the same greedy tokens as on the CPU, with the packed
(Triton varlen kernel) decode attention. Runs where a CUDA device exists (``make test-gpu``)."""

from __future__ import annotations

import copy

import pytest
import torch

from trillium.engine import Engine, EngineConfig, GenerationRequest
from trillium.kvcompress.registry import make_policy

from .conftest import VOCAB

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_engine_matches_the_cpu_engine(tiny_llama):
    prompts = [
        torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(n)) for n in (40, 90, 130)
    ]
    policies = [None, "snapkv", "adakv"]

    def run(model, backend):
        engine = Engine(
            model, EngineConfig(kv_cache_bytes=10**9, max_batched_tokens=32, decode_backend=backend)
        )
        try:
            results = engine.generate(
                GenerationRequest(
                    prompt_ids=p, policy=make_policy(n, budget=0.3) if n else None, max_new_tokens=8
                )
                for p, n in zip(prompts, policies)
            )
        finally:
            engine.close()
        return [r.tokens.tolist() for r in results]

    cpu = run(copy.deepcopy(tiny_llama), "views")
    assert run(copy.deepcopy(tiny_llama).cuda(), "packed") == cpu
