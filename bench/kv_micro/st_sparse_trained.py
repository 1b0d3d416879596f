"""ST-SpAttn end to end on the *trained* av-tiny: prefill speed-up beside its Amdahl bound, and accuracy.

PureKV (arXiv 2510.25600) claims 3.16x prefill from its spatial-temporal sparse attention. On a
random-weight model the plan keeps most tiles, so here the shipped av-tiny (real attention patterns)
prefills its longest held-out clips (up to 64 frames: the processor has 64 timestamp markers) and,
per clip length, in one process:

- ``dense_ms``: the whole-model prefill with SDPA (median of ``--repeats``);
- ``attention_share``: the share of that prefill spent in attention calls (timed attention function);
- ``density``: ST-SpAttn's token density (kept causal pairs / all), mean over layers and prompts;
- ``amdahl_bound``: ``1 / ((1 - a) + a * density)``, the speed-up if sparse attention cost only its
  kept pairs and everything else stayed;
- ``sparse_ms`` / ``speedup``: the prefill with ST-SpAttn and its dense fallback (``max_density``,
  the default), and ``speedup_no_fallback`` with the fallback off (``max_density = 1``);
- ``accuracy_dense`` / ``accuracy_sparse``: greedy answers with the full cache after a dense or an
  ST-SpAttn prefill (ComposedPolicy with a budget of 1.0: nothing evicted, only the prefill differs).

Writes ``kv-micro-st-trained.json`` (``commit``, ``versions``) and ``.png`` into ``--out-dir``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from provenance import git_commit, package_versions  # noqa: E402

from trillium.kvcompress import Modality, generate_with_policy, make_policy  # noqa: E402
from trillium.kvcompress.policies import ComposedPolicy  # noqa: E402
from trillium.kvcompress.policies.st_sparse import STSparsePrefill  # noqa: E402
from trillium.kvcompress.sparse_prefill import STSparseParams, sparse_prefill  # noqa: E402

TIMED = "trillium_timed_sdpa"
_attention_seconds = [0.0]


def _timed_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):  # noqa: PLR0917
    started = time.perf_counter()
    out = sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )
    _attention_seconds[0] += time.perf_counter() - started
    return out


AttentionInterface.register(TIMED, _timed_sdpa)


def _median_ms(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


@torch.no_grad()
def measure(model, processor, prompts, params: STSparseParams, repeats: int) -> dict:
    """Timings, density and accuracy of ``prompts`` (one clip length)."""
    dense, sparse, share, densities, fallbacks = [], [], [], [], []
    correct_dense = correct_sparse = 0
    for inputs, embeds, answer in prompts:
        layout = inputs.layout
        frame = torch.where(layout.mask(Modality.VIDEO), layout.frame, -1)

        def dense_run(embeds=embeds):
            model(inputs_embeds=embeds, use_cache=False)

        def sparse_run(embeds=embeds, frame=frame, layout=layout, params=params):
            with sparse_prefill(model, layout.modality, frame, params, keep_plans=False):
                model(inputs_embeds=embeds, use_cache=False)

        dense_run()  # warm-up
        dense.append(_median_ms(dense_run, repeats))
        model.set_attn_implementation(TIMED)
        _attention_seconds[0] = 0.0
        started = time.perf_counter()
        dense_run()
        share.append(_attention_seconds[0] / (time.perf_counter() - started))
        model.set_attn_implementation("sdpa")
        sparse.append(_median_ms(sparse_run, repeats))
        with sparse_prefill(model, layout.modality, frame, params, keep_plans=False) as session:
            model(inputs_embeds=embeds, use_cache=False)
        densities.append(statistics.mean(s["token_density"] for s in session.stats))
        fallbacks.append(statistics.mean(s["dense_fallback"] for s in session.stats))
        for prefill, tally in ((None, "dense"), (STSparsePrefill(params), "sparse")):
            base = make_policy("streaming_llm", budget=1.0)
            policy = base if prefill is None else ComposedPolicy(base=base, prefill=prefill)
            result = generate_with_policy(
                model,
                inputs_embeds=embeds,
                layout=layout,
                policy=policy,
                max_new_tokens=3,
                eos_token_id=model.config.eos_token_id,
                show_progress=False,
            )
            ok = processor.decode(result.tokens) == answer
            correct_dense += ok and tally == "dense"
            correct_sparse += ok and tally == "sparse"
    return {
        "dense_ms": statistics.mean(dense),
        "sparse_ms": statistics.mean(sparse),
        "attention_share": statistics.mean(share),
        "density": statistics.mean(densities),
        "fallback_share": statistics.mean(fallbacks),
        "accuracy_dense": correct_dense / len(prompts),
        "accuracy_sparse": correct_sparse / len(prompts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "assets" / "models" / "av-tiny")
    parser.add_argument("--frames", default="32,48,64", help="clip lengths (frames) to measure")
    parser.add_argument("--per-family", type=int, default=4, help="held-out questions per family and length")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    commit = git_commit()  # the code this run measures, read before it starts
    from trillium.models.av_tiny.evaluate import sample_inputs
    from trillium.models.av_tiny.model import embed_inputs, load_av_tiny
    from trillium.models.avqa.dataset import heldout_samples

    torch.set_num_threads(args.threads)
    model, processor = load_av_tiny(args.model)
    rows = []
    for frames in tqdm([int(f) for f in args.frames.split(",")], desc="st-sparse (trained av-tiny)"):
        prompts = []
        for sample in heldout_samples(args.per_family, (frames,)):
            inputs = sample_inputs(processor, sample, 0)
            with torch.no_grad():
                embeds = embed_inputs(model, inputs.input_ids, inputs.aux_ids)
            prompts.append((inputs, embeds, list(sample.questions[0].answer)))
        with_fallback = measure(model, processor, prompts, STSparseParams(), args.repeats)
        no_fallback = measure(model, processor, prompts, STSparseParams(max_density=1.0), args.repeats)
        a, d = with_fallback["attention_share"], no_fallback["density"]
        bound = 1.0 / ((1.0 - a) + a * d)
        rows.append(
            {
                "frames": frames,
                "prompt_tokens": [
                    min(p[0].input_ids.shape[1] for p in prompts),
                    max(p[0].input_ids.shape[1] for p in prompts),
                ],
                "n": len(prompts),
                **with_fallback,
                "speedup": with_fallback["dense_ms"] / with_fallback["sparse_ms"],
                "speedup_no_fallback": no_fallback["dense_ms"] / no_fallback["sparse_ms"],
                "accuracy_sparse_no_fallback": no_fallback["accuracy_sparse"],
                "amdahl_bound": bound,
                "speedup_over_bound": (no_fallback["dense_ms"] / no_fallback["sparse_ms"]) / bound,
            }
        )
    result = {"commit": commit, "versions": package_versions(), "threads": args.threads, "rows": rows}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / "kv-micro-st-trained"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    _plot(rows, stem.with_suffix(".png"))
    for row in rows:
        print(json.dumps(row))


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    x = [r["prompt_tokens"][1] for r in rows]
    axis.plot(x, [r["speedup_no_fallback"] for r in rows], "o-", label="ST-SpAttn, no fallback")
    axis.plot(x, [r["speedup"] for r in rows], "s-", label="ST-SpAttn with dense fallback (default)")
    axis.plot(x, [r["amdahl_bound"] for r in rows], "k--", label="Amdahl bound (attention share x density)")
    axis.axhline(1.0, color="grey", lw=1)
    for r, xi in zip(rows, x):
        axis.annotate(
            f"d={r['density']:.2f}, a={r['attention_share']:.2f}", (xi, r["amdahl_bound"]), fontsize=7
        )
    axis.set_xlabel("prompt tokens (trained av-tiny, held-out clips)")
    axis.set_ylabel("prefill speed-up vs dense SDPA")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
