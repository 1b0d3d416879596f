"""Micro-benchmark of whole-model KV compression on CPU: bytes, decode speed, prefill, overhead.

A random Qwen2 decoder (hidden 512, 8 layers, 8 query / 2 KV heads, fp32 — the configuration kvpress
0.5.5 was measured with on these machines) over a long, mostly-video prompt (text, video frames,
audio, a text question). For every policy at every budget, in one process:

- ``kv_bytes`` (exact bytes of our compressed cache) vs ``kv_bytes_full`` (the dense cache);
- ``decode_ms_per_token`` with the compressed cache vs ``decode_ms_per_token_full`` with transformers'
  default ``DynamicCache``;
- ``prefill_ms`` (prefill + compression) vs ``prefill_ms_dense`` (plain prefill), and ``compress_ms``;
- ``purekv+st_sparse`` rows compose PureKV with the ST-SpAttn sparse prefill (PureKV's prefill speed-up).

Speed is reported as ratios against the baseline measured in the same run. Writes ``kv-micro.json``,
``kv-micro.png`` and ``kv-micro.md`` into ``--out-dir``.

    python bench/kv_micro/run.py            # 8k tokens (about 10 minutes on 2 cores)
    python bench/kv_micro/run.py --quick    # tiny smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM

from trillium.kvcompress import TokenLayout, compress, list_policies, make_policy
from trillium.kvcompress.policies import ComposedPolicy, PureKV
from trillium.kvcompress.policies.st_sparse import STSparsePrefill
from trillium.kvcompress.sparse_prefill import STSparseParams


@dataclass(frozen=True)
class Setup:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    frames: int
    frame_rows: int
    frame_cols: int
    audio_steps: int
    text_prefix: int
    question: int
    decode_tokens: int
    budgets: tuple[float, ...]

    @property
    def context_tokens(self) -> int:
        video = self.frames * self.frame_rows * self.frame_cols
        return self.text_prefix + video + self.audio_steps + self.question


FULL = Setup(512, 8, 8, 2, 30, 16, 16, 384, 64, 64, 32, (0.2, 0.1, 0.05))
QUICK = Setup(64, 2, 4, 2, 4, 4, 4, 16, 8, 8, 4, (0.2,))


def build_model(setup: Setup) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=1024,
        hidden_size=setup.hidden,
        intermediate_size=2 * setup.hidden,
        num_hidden_layers=setup.layers,
        num_attention_heads=setup.heads,
        num_key_value_heads=setup.kv_heads,
        max_position_embeddings=4 * setup.context_tokens,
    )
    return Qwen2ForCausalLM(config).eval()


def build_prompt(setup: Setup) -> tuple[torch.Tensor, TokenLayout]:
    layout = TokenLayout.concat(
        [
            TokenLayout.text(setup.text_prefix),
            TokenLayout.video(setup.frames, setup.frame_rows, setup.frame_cols),
            TokenLayout.audio(setup.audio_steps),
            TokenLayout.text(setup.question),
        ]
    )
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 1024, (1, len(layout)), generator=generator), layout


def dense_bytes(cache: DynamicCache) -> int:
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)


@torch.no_grad()
def decode_ms_per_token(model, cache, first_token: int, start_position: int, steps: int) -> float:
    times, token = [], first_token
    for step in range(steps):
        begin = time.perf_counter()
        out = model(
            input_ids=torch.tensor([[token]]),
            position_ids=torch.tensor([[start_position + step]]),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        times.append(time.perf_counter() - begin)
        token = int(out.logits[0, -1].argmax())
    return 1000 * statistics.median(times)


@torch.no_grad()
def run_full(model, input_ids, setup: Setup) -> dict[str, float]:
    cache = DynamicCache(config=model.config)
    begin = time.perf_counter()
    out = model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
    prefill_ms = 1000 * (time.perf_counter() - begin)
    kv_bytes = dense_bytes(cache)
    first = int(out.logits[0, -1].argmax())
    decode = decode_ms_per_token(model, cache, first, input_ids.shape[1], setup.decode_tokens)
    return {"prefill_ms": prefill_ms, "kv_bytes": kv_bytes, "decode_ms_per_token": decode}


@torch.no_grad()
def run_policy(model, input_ids, layout, policy, setup: Setup) -> dict[str, float]:
    with compress(model, policy, layout) as session:
        begin = time.perf_counter()
        out = model(input_ids=input_ids, past_key_values=session.cache, use_cache=True, logits_to_keep=1)
        prefill_ms = 1000 * (time.perf_counter() - begin)
        report = session.report
        first = int(out.logits[0, -1].argmax())
        decode = decode_ms_per_token(model, session.cache, first, input_ids.shape[1], setup.decode_tokens)
    return {
        "prefill_ms": prefill_ms,
        "compress_ms": 1000 * report.compress_seconds,
        "kv_bytes": report.bytes_after,
        "kv_bytes_full": report.bytes_before,
        "decode_ms_per_token": decode,
        "tokens_kept_fraction": report.kept_fraction,
    }


def policies_to_run(budget: float) -> list[tuple[str, object]]:
    runs = [(spec.name, make_policy(spec.name, budget=budget)) for spec in list_policies()]
    sparse = ComposedPolicy(base=PureKV(budget=budget), prefill=STSparsePrefill(STSparseParams()))
    return [*runs, ("purekv+st_sparse", sparse)]


def measure(setup: Setup, progress: bool = True) -> list[dict]:
    model = build_model(setup)
    input_ids, layout = build_prompt(setup)
    full = run_full(model, input_ids, setup)
    rows = []
    jobs = [(budget, name, policy) for budget in setup.budgets for name, policy in policies_to_run(budget)]
    for budget, name, policy in tqdm(jobs, desc="kv-micro", disable=not progress):
        result = run_policy(model, input_ids, layout, policy, setup)
        rows.append(
            {
                "policy": name,
                "budget": budget,
                "context_tokens": setup.context_tokens,
                **result,
                "kv_bytes_dense_cache": full["kv_bytes"],
                "decode_ms_per_token_full": full["decode_ms_per_token"],
                "prefill_ms_dense": full["prefill_ms"],
                "kv_bytes_ratio": full["kv_bytes"] / result["kv_bytes"],
                "decode_speedup": full["decode_ms_per_token"] / result["decode_ms_per_token"],
                "prefill_speedup": full["prefill_ms"] / result["prefill_ms"],
                "compress_overhead_of_prefill": result["compress_ms"] / result["prefill_ms"],
            }
        )
    return rows


def write_outputs(rows: list[dict], setup: Setup, out_dir: Path, quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "benchmark": "kv-micro",
        "baseline": "transformers DynamicCache with SDPA, same process",
        "setup": setup.__dict__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "quick": quick,
    }
    (out_dir / "kv-micro.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    lines = [
        f"# kv-micro ({setup.context_tokens} context tokens, {torch.get_num_threads()} threads)",
        "",
        "| policy | budget | KV bytes ratio | decode speed-up | prefill speed-up | compress % of prefill |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['policy']} | {r['budget']:.0%} | {r['kv_bytes_ratio']:.2f}x | {r['decode_speedup']:.2f}x | "
        f"{r['prefill_speedup']:.2f}x | {100 * r['compress_overhead_of_prefill']:.1f}% |"
        for r in rows
    ]
    (out_dir / "kv-micro.md").write_text("\n".join(lines) + "\n")
    figure, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for budget in setup.budgets:
        subset = [r for r in rows if r["budget"] == budget]
        names = [r["policy"] for r in subset]
        axes[0].plot(names, [r["decode_speedup"] for r in subset], "o-", label=f"budget {budget:.0%}")
        axes[1].plot(names, [r["kv_bytes_ratio"] for r in subset], "o-", label=f"budget {budget:.0%}")
    axes[0].set_ylabel("decode speed-up vs DynamicCache (x)")
    axes[1].set_ylabel("KV bytes: dense / compressed (x)")
    for axis in axes:
        axis.tick_params(axis="x", rotation=60)
        axis.axhline(1.0, color="grey", lw=0.8)
        axis.legend()
    figure.suptitle(f"kv-micro: {setup.context_tokens} tokens, random Qwen2 (hidden {setup.hidden})")
    figure.tight_layout()
    figure.savefig(out_dir / "kv-micro.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model and prompt (smoke run)")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parents[1] / "results")
    args = parser.parse_args()
    setup = QUICK if args.quick else FULL
    rows = measure(setup)
    write_outputs(rows, setup, args.out_dir, args.quick)
    print((args.out_dir / "kv-micro.md").read_text())


if __name__ == "__main__":
    main()
