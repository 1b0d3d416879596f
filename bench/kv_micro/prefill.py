"""Micro-benchmark: dense causal SDPA prefill attention vs ST-SpAttn block-sparse prefill (CPU).

PureKV (arXiv 2510.25600) reports 3.16x prefill acceleration from ST-SpAttn; the mask is our design
(``trillium.kvcompress.sparse_prefill``). This script measures one attention call (B=1) in one process,
always as a ratio against dense causal SDPA measured in the same run:

- ``dense``: ``F.scaled_dot_product_attention(..., is_causal=True)``;
- ``sparse_attention``: ``st_sparse_attention`` over a prebuilt plan (per backend: ``torch`` gather,
  ``flex`` = compiled flex_attention, whose one-off compile time is reported separately);
- ``sparse_total``: plan building (layout rules, duplicate detection, pooled gamma selection) + attention.

Inputs are synthetic but shaped like video prefill: a text prefix, ``F`` frames of ``frame_size`` tokens
(each frame's keys share a frame "content" vector that drifts from frame to frame, except in a few
static shots where frames repeat), and
a text question at the end. Queries lean towards their own frame's content so attention concentrates
on nearby frames, and the first 4 tokens act as attention sinks (logit ``--sink-logit``, about half of a
video query's attention mass at the default 10; sinks are the common pattern reported by StreamingLLM,
arXiv 2309.17453; ``--sink-logit 0`` disables them). The far-frame tail is diffuse, so ``gamma``
still selects far tiles. Sparse output error against dense is reported too.

Usage::

    python bench/kv_micro/prefill.py            # full: 8k and 16k tokens, 64 and 256-token frames
    python bench/kv_micro/prefill.py --quick    # seconds-long smoke run

Writes ``kv-micro-prefill.json`` and ``kv-micro-prefill.png`` into ``--out-dir`` (default ``bench/results``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from trillium.kvcompress.sparse_prefill import (
    TEXT,
    VIDEO,
    STSparseParams,
    build_sparse_prefill_plan,
    st_sparse_attention,
)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results"


@dataclass(frozen=True)
class Case:
    """One benchmark configuration."""

    seq_len: int
    frame_size: int
    heads: int
    kv_heads: int
    head_dim: int
    text_prefix: int
    text_suffix: int
    static_shots: int
    shot_frames: int
    sink_logit: float = 10.0


def video_layout(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    """``modality`` and ``frame_index`` (int64[L]): text prefix, whole frames, text suffix."""
    video_tokens = case.seq_len - case.text_prefix - case.text_suffix
    num_frames = video_tokens // case.frame_size
    suffix = case.seq_len - case.text_prefix - num_frames * case.frame_size
    modality = torch.cat(
        [
            torch.full((case.text_prefix,), TEXT),
            torch.full((num_frames * case.frame_size,), VIDEO),
            torch.full((suffix,), TEXT),
        ]
    )
    frames = torch.arange(num_frames).repeat_interleave(case.frame_size)
    frame_index = torch.cat([torch.full((case.text_prefix,), -1), frames, torch.full((suffix,), -1)])
    return modality, frame_index


def synthetic_qkv(
    case: Case, modality: torch.Tensor, frame_index: torch.Tensor, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Video-like ``q [1, H, L, D]``, ``k, v [1, H_kv, L, D]`` in fp32 (see module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    L, D, H, H_kv = case.seq_len, case.head_dim, case.heads, case.kv_heads
    num_frames = int(frame_index.max()) + 1
    content = torch.empty(H_kv, num_frames, D)
    content[:, 0] = torch.randn(H_kv, D, generator=gen)
    static = torch.zeros(num_frames, dtype=torch.bool)
    for shot in range(case.static_shots):
        first = (shot + 1) * num_frames // (case.static_shots + 1)
        static[first + 1 : first + case.shot_frames] = True
    for frame in range(1, num_frames):
        drift = 0.0 if static[frame] else 0.8
        content[:, frame] = content[:, frame - 1] * (1 - drift) + drift * torch.randn(H_kv, D, generator=gen)
    content = F.normalize(content, dim=-1) * math.sqrt(D)
    is_video = modality == VIDEO
    keys = torch.randn(1, H_kv, L, D, generator=gen)
    pattern = torch.randn(H_kv, case.frame_size, D, generator=gen) * 0.3
    frame_of = frame_index.clamp(min=0)
    slot = torch.arange(L) % case.frame_size
    keys[0, :, is_video] = content[:, frame_of[is_video]] + pattern[:, slot[is_video]]
    group = H // H_kv
    queries = torch.randn(1, H, L, D, generator=gen)
    own = content.repeat_interleave(group, dim=0)[:, frame_of]
    queries[0, :, is_video] = 0.5 * queries[0, :, is_video] + 0.8 * own[:, is_video]
    if case.sink_logit > 0:
        # one feature reserved for the attention sinks: every query scores sink_logit on the 4 first keys
        keys[..., 0] = 0.0
        queries[..., 0] = 4.0
        keys[:, :, :4, 0] = case.sink_logit * math.sqrt(D) / 4.0
    values = torch.randn(1, H_kv, L, D, generator=gen)
    return queries, keys, values


def best_time(fn: Callable[[], Any], repeats: int) -> float:
    """Best wall time of ``repeats`` calls (seconds)."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def dense_attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    gqa = query.shape[1] != keys.shape[1]
    return F.scaled_dot_product_attention(query, keys, values, is_causal=True, enable_gqa=gqa)


def run_case(case: Case, params: STSparseParams, backends: Sequence[str], repeats: int) -> dict[str, Any]:
    """Measure one case; returns a JSON-ready record."""
    modality, frame_index = video_layout(case)
    query, keys, values = synthetic_qkv(case, modality, frame_index)
    record: dict[str, Any] = {"case": asdict(case)}
    with torch.inference_mode():
        dense_out = dense_attention(query, keys, values)
        record["dense_s"] = best_time(lambda: dense_attention(query, keys, values), repeats)

        def plan_once() -> Any:
            return build_sparse_prefill_plan(query, keys, modality, frame_index, params, values=values)

        plan = plan_once()
        record["plan_s"] = best_time(plan_once, repeats)
        record["plan_stats"] = plan.stats()
        for backend in backends:
            start = time.perf_counter()
            out = st_sparse_attention(query, keys, values, plan, backend=backend)
            first_call = time.perf_counter() - start
            seconds = best_time(
                lambda b=backend: st_sparse_attention(query, keys, values, plan, backend=b), repeats
            )
            error = (out - dense_out).abs().mean() / dense_out.abs().mean()
            record[backend] = {
                "attention_s": seconds,
                "first_call_s": first_call,
                "speedup_attention": record["dense_s"] / seconds,
                "speedup_with_plan": record["dense_s"] / (seconds + record["plan_s"]),
                "relative_mean_abs_error_vs_dense": float(error),
            }
    return record


def plot(records: list[dict[str, Any]], backends: Sequence[str], path: Path) -> None:
    """Bar chart of attention speedup over dense SDPA per case and backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"L={r['case']['seq_len']}\nframe={r['case']['frame_size']}" for r in records]
    width = 0.8 / (2 * len(backends))
    fig, ax = plt.subplots(figsize=(max(8, 2.2 * len(records)), 4))
    for i, backend in enumerate(backends):
        xs = [j + (2 * i) * width for j in range(len(records))]
        ax.bar(xs, [r[backend]["speedup_attention"] for r in records], width, label=f"{backend}: attention")
        xs = [x + width for x in xs]
        ax.bar(
            xs,
            [r[backend]["speedup_with_plan"] for r in records],
            width,
            label=f"{backend}: plan + attention",
        )
    ax.axhline(3.16, color="gray", linestyle="--", label="PureKV prefill 3.16x")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(records))], labels)
    ax.set_ylabel("speedup vs dense causal SDPA")
    ax.set_title("ST-SpAttn prefill attention on CPU (fp32)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[8192, 16384])
    parser.add_argument("--frame-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--text-prefix", type=int, default=64)
    parser.add_argument("--text-suffix", type=int, default=64)
    parser.add_argument("--static-shots", type=int, default=3, help="runs of repeated frames")
    parser.add_argument("--shot-frames", type=int, default=4, help="frames per static shot")
    parser.add_argument("--sink-logit", type=float, default=10.0, help="attention-sink logit (0: none)")
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--gamma", type=float, default=0.9)
    parser.add_argument("--delta", type=float, default=0.95)
    parser.add_argument(
        "--backends", nargs="+", default=["torch", "flex"], choices=["torch", "flex", "reference"]
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: library default)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, torch backend, one repeat")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths, args.frame_sizes, args.heads, args.kv_heads = [768], [32], 2, 1
        args.head_dim, args.text_prefix, args.text_suffix, args.block_size = 16, 16, 16, 32
        args.backends, args.repeats = ["torch"], 1
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    params = STSparseParams(block_size=args.block_size, gamma=args.gamma, delta=args.delta)
    cases = [
        Case(
            length,
            frame,
            args.heads,
            args.kv_heads,
            args.head_dim,
            args.text_prefix,
            args.text_suffix,
            args.static_shots,
            args.shot_frames,
            args.sink_logit,
        )
        for length in args.lengths
        for frame in args.frame_sizes
    ]
    records = [
        run_case(case, params, args.backends, args.repeats)
        for case in tqdm(cases, desc="kv-micro prefill", disable=args.no_progress)
    ]
    result = {
        "benchmark": "kv-micro-prefill",
        "baseline": "dense causal SDPA (torch.nn.functional.scaled_dot_product_attention), same process",
        "params": asdict(params),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "quick": args.quick,
        "records": records,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "kv-micro-prefill.json").write_text(json.dumps(result, indent=2))
    plot(records, args.backends, args.out_dir / "kv-micro-prefill.png")
    for record in records:
        case = record["case"]
        parts = [f"L={case['seq_len']:>6} frame={case['frame_size']:>4} dense={record['dense_s']:.3f}s"]
        parts.append(f"density={record['plan_stats']['token_density']:.3f} plan={record['plan_s']:.3f}s")
        parts += [
            f"{b}={record[b]['attention_s']:.3f}s ({record[b]['speedup_attention']:.2f}x,"
            f" {record[b]['speedup_with_plan']:.2f}x with plan)"
            for b in args.backends
        ]
        print("  ".join(parts))
    return result


if __name__ == "__main__":
    main()
