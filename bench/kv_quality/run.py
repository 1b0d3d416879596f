"""`make bench-kv`: accuracy of every KV-compression policy on av-tiny, beside kvpress.

Held-out AVQA-synth samples (one question each, every family) are answered by the shipped `av-tiny`
model with the full cache and with every Trillium policy at every budget, in kvpress's
**question-agnostic** setting: the context (everything before the question segment,
`AVInputs.question_start`) is prefilled and compressed to the budget (a fraction of the context's
tokens) without the question being seen; the question's tokens then run through the compressed cache
(not compressed, positions continuing after the context), and the answer is decoded greedily with
positions continuing after the question. The answer token and the `<eos>` after it are therefore read
from hidden states that only saw the compressed context. The prompt embeddings (which carry token-shift
auxiliary ids of previous tokens) are computed once over the whole prompt and sliced at the question.
The full-cache baseline prefills the whole prompt in one forward (what budget 1.0 reproduces). NVIDIA
kvpress's presses run the same protocol on the same prompts in kvpress's own environment
(`.venv-kvpress`, transformers 5.2): the press is active during the context forward only. The
random-eviction floor (kvcompress's `random` policy, run like every other policy) shows how much the
task depends on keeping the right tokens.

Per policy and budget it also reports costs as ratios to the full cache measured in the same run:
KV bytes = what the cache holds when the first answer token is chosen, i.e. the kept context entries
plus the question's entries (uncompressed), without reserved decode capacity — for the full cache all
prompt entries; prefill time = time to the first token's logits (context forward with compression plus
question forward); decode time per token. Timings use one torch thread by default (`--threads`). Two
attention observations on av-tiny, from full-prompt attention: the share of the question's attention
that goes to video vs audio per layer (AccKV's "attention convergence") and the cross-modal share of
attention per layer (FlowMM's ρ^l).

Writes `NAME.json` ({"rows": [...], "perf": [...], "observations": {...}}), `NAME.png`,
`NAME-observations.png` and `NAME.md` into `--out-dir` (`--name`, default `kv-quality`). The held-out
clips have 7, 11 and 15 frames of 40 px (about 220-460 prompt tokens); `--frames 32 --name
kv-quality-long` (`make bench-kv-long`) runs the same protocol on about 950-token prompts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

import trillium.models
from trillium.kvcompress import Modality, generate_with_policy, list_policies, make_policy
from trillium.models.av_tiny.evaluate import greedy_decode, sample_inputs
from trillium.models.av_tiny.model import embed_inputs, load_av_tiny
from trillium.models.av_tiny.processor import AVInputs
from trillium.models.avqa import FAMILIES
from trillium.models.avqa.dataset import HELDOUT_FRAMES, heldout_samples

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "assets" / "models" / "av-tiny"
KVPRESS_PYTHON = REPO / ".venv-kvpress" / "bin" / "python"
BUDGETS = (1.0, 0.4, 0.2, 0.1, 0.05)
KVPRESS_PRESSES = ("snapkv", "streaming_llm", "expected_attention", "pyramidkv")
MAX_NEW_TOKENS = 3


@dataclass
class Prompt:
    """One held-out question: the processor's inputs, their embeddings (computed once) and the answer."""

    inputs: AVInputs
    embeds: torch.Tensor
    family: str
    answer: list[str]

    @property
    def input_ids(self) -> torch.Tensor:
        return self.inputs.input_ids

    @property
    def layout(self):
        return self.inputs.layout

    @property
    def question_start(self) -> int:
        """Index of the first question token: the context is ``[0, question_start)``."""
        return self.inputs.question_start


@dataclass
class Tally:
    """Correct answers per family plus the cost of producing them."""

    correct: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    total: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    kv_bytes: float = 0.0
    prefill_s: float = 0.0
    decode_s_per_token: float = 0.0

    def add(self, family: str, ok: bool) -> None:
        self.correct[family] += int(ok)
        self.total[family] += 1

    def accuracy(self) -> dict[str, tuple[float, int]]:
        out = {f: (self.correct[f] / self.total[f], self.total[f]) for f in FAMILIES if self.total[f]}
        n = sum(self.total.values())
        out["overall"] = (sum(self.correct.values()) / n if n else 0.0, n)
        return out


@torch.no_grad()
def build_prompts(
    model, processor, per_family: int, n_frames: tuple[int, ...] = HELDOUT_FRAMES, frame_size: int = 40
) -> list[Prompt]:
    prompts = []
    for sample in heldout_samples(per_family, n_frames, frame_size):
        inputs = sample_inputs(processor, sample, 0)
        question = sample.questions[0]
        embeds = embed_inputs(model, inputs.input_ids, inputs.aux_ids)
        prompts.append(Prompt(inputs, embeds, question.family, list(question.answer)))
    return prompts


def run_trillium(model, processor, prompts, policy) -> Tally:
    """Question-agnostic: ``policy`` compresses the context, the question runs through the kept
    entries. KV bytes: exact compressed context bytes plus the question's dense entries (a context
    token's bytes, ``bytes_before / context length``, times the question length)."""
    tally = Tally()
    eos = model.config.eos_token_id
    for prompt in prompts:
        start = prompt.question_start
        result = generate_with_policy(
            model,
            inputs_embeds=prompt.embeds[:, :start],
            question_embeds=prompt.embeds[:, start:],
            layout=prompt.layout.select(range(start)),
            policy=policy,
            max_new_tokens=MAX_NEW_TOKENS,
            eos_token_id=eos,
            show_progress=False,
        )
        tally.add(prompt.family, processor.decode(result.tokens) == prompt.answer)
        report = result.report
        question_bytes = report.bytes_before * (prompt.input_ids.shape[1] - start) / start
        tally.kv_bytes += (report.bytes_after + question_bytes) / len(prompts)
        tally.prefill_s += result.prefill_seconds / len(prompts)
        tally.decode_s_per_token += result.decode_seconds_per_token / len(prompts)
    return tally


@torch.no_grad()
def run_full(model, processor, prompts) -> Tally:
    """The uncompressed baseline: the whole prompt prefilled in one forward into transformers'
    DynamicCache (context and question entries), with its bytes and timings."""
    from transformers import DynamicCache

    tally = Tally()
    eos = model.config.eos_token_id
    for prompt in prompts:
        cache = DynamicCache(config=model.config)
        started = time.perf_counter()
        out = model(inputs_embeds=prompt.embeds, past_key_values=cache, use_cache=True, logits_to_keep=1)
        tally.prefill_s += (time.perf_counter() - started) / len(prompts)
        tally.kv_bytes += sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers) / len(
            prompts
        )
        begin = time.perf_counter()
        tokens = greedy_decode(
            model,
            cache,
            out.logits[0, -1],
            next_position=prompt.input_ids.shape[1],
            max_new_tokens=MAX_NEW_TOKENS,
            eos_token_id=eos,
        )
        decode = time.perf_counter() - begin
        tally.decode_s_per_token += decode / max(1, len(tokens) - 1) / len(prompts)
        tally.add(prompt.family, processor.decode(tokens) == prompt.answer)
    return tally


def run_kvpress(
    model_dir: Path, processor, prompts, budgets, eos_token_id: int
) -> dict[tuple[str, float], Tally] | str:
    """kvpress in its own environment; returns tallies, or the reason it could not run."""
    if not KVPRESS_PYTHON.exists():
        return "the kvpress environment is missing (make setup-kvpress)"
    with tempfile.TemporaryDirectory() as tmp:
        request = {
            "model": str(model_dir),
            "presses": list(KVPRESS_PRESSES),
            "budgets": list(budgets),
            "prompts": [p.input_ids[0].tolist() for p in prompts],
            "aux_ids": [p.inputs.aux_ids[0].tolist() for p in prompts],
            "question_starts": [p.question_start for p in prompts],
            "max_new_tokens": MAX_NEW_TOKENS,
            "eos_token_id": int(eos_token_id),
            "threads": torch.get_num_threads(),
        }
        request_path, output_path = Path(tmp) / "request.json", Path(tmp) / "output.json"
        request_path.write_text(json.dumps(request))
        runner = Path(__file__).with_name("kvpress_runner.py")
        done = subprocess.run(
            [str(KVPRESS_PYTHON), str(runner), str(request_path), str(output_path)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            return f"kvpress runner failed: {done.stderr.strip().splitlines()[-1:]}"
        output = json.loads(output_path.read_text())
    tallies: dict[tuple[str, float], Tally] = defaultdict(Tally)
    for result in output["results"]:
        prompt = prompts[result["prompt"]]
        tally = tallies[(result["press"], result["budget"])]
        tally.add(prompt.family, processor.decode(torch.tensor(result["tokens"])) == prompt.answer)
        tally.kv_bytes += result["kv_bytes"] / len(prompts)
        tally.prefill_s += result["prefill_s"] / len(prompts)
        steps = max(1, len(result["tokens"]) - 1)
        tally.decode_s_per_token += result["decode_s"] / steps / len(prompts)
    return dict(tallies)


@torch.no_grad()
def attention_observations(model, prompts, limit: int = 20) -> dict[str, list[float]]:
    """Per layer, averaged over prompts: where the question's attention goes (video, audio, text), and
    the cross-modal share of all attention mass (pairs of different modalities, FlowMM's ρ^l)."""
    model.set_attn_implementation("eager")
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0] * model.config.num_hidden_layers)
    used = prompts[:limit]
    for prompt in used:
        attentions = model(inputs_embeds=prompt.embeds, output_attentions=True).attentions
        modality = prompt.layout.modality
        question = torch.nonzero(prompt.layout.segment == prompt.layout.segment.max()).flatten()
        same = modality[:, None] == modality[None, :]
        for layer, attention in enumerate(attentions):
            probs = attention[0].mean(0)  # [L, L], averaged over heads
            rows = probs[question]
            for name, m in (("video", Modality.VIDEO), ("audio", Modality.AUDIO), ("text", Modality.TEXT)):
                sums[f"question_to_{name}"][layer] += float(rows[:, modality == m].sum(-1).mean()) / len(used)
            sums["cross_modal_share"][layer] += float(probs[~same].sum() / probs.sum()) / len(used)
    model.set_attn_implementation("sdpa")
    return dict(sums)


def tally_rows(impl: str, policy: str, budget: float, tally: Tally, full: Tally) -> list[dict]:
    full_accuracy = full.accuracy()
    return [
        {
            "impl": impl,
            "policy": policy,
            "budget": budget,
            "family": family,
            "accuracy": accuracy,
            "accuracy_full": full_accuracy[family][0],
            "n": n,
        }
        for family, (accuracy, n) in tally.accuracy().items()
    ]


def perf_row(impl: str, policy: str, budget: float, tally: Tally, full: Tally) -> dict:
    return {
        "impl": impl,
        "policy": policy,
        "budget": budget,
        "kv_bytes": tally.kv_bytes,
        "kv_bytes_full": full.kv_bytes,
        "kv_bytes_ratio": tally.kv_bytes / full.kv_bytes if full.kv_bytes and tally.kv_bytes else None,
        "prefill_ms": 1000 * tally.prefill_s,
        "prefill_ms_full": 1000 * full.prefill_s,
        "decode_ms_per_token": 1000 * tally.decode_s_per_token,
        "decode_ms_per_token_full": 1000 * full.decode_s_per_token,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--per-family", type=int, default=30, help="held-out questions per family")
    parser.add_argument(
        "--frames",
        default=",".join(map(str, HELDOUT_FRAMES)),
        help="comma-separated frame counts of the held-out clips (cycled over)",
    )
    parser.add_argument("--frame-size", type=int, default=40, help="frame side in px")
    parser.add_argument("--name", default="kv-quality", help="stem of the output files")
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    parser.add_argument(
        "--policies",
        default="all",
        help="comma-separated policy names, or all (the random-eviction floor always runs)",
    )
    parser.add_argument("--no-kvpress", action="store_true")
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads here and in the kvpress runner (1: stable timings on a shared machine)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    budgets = tuple(float(b) for b in args.budgets.split(","))
    names = [s.name for s in list_policies()] if args.policies == "all" else args.policies.split(",")
    names = list(dict.fromkeys(["random", *names]))  # the floor is part of every report

    model, processor = load_av_tiny(args.model)
    model.eval()
    frames = tuple(int(f) for f in args.frames.split(","))
    prompts = build_prompts(model, processor, args.per_family, frames, args.frame_size)
    run_full(model, processor, prompts[:1])  # warm-up (first-call allocations), not reported
    full = run_full(model, processor, prompts)
    rows = tally_rows("trillium", "full", 1.0, full, full)
    perf = []
    jobs = [(name, budget) for name in names for budget in budgets]
    for name, budget in tqdm(jobs, desc="bench-kv"):
        tally = run_trillium(model, processor, prompts, make_policy(name, budget=budget))
        rows += tally_rows("trillium", name, budget, tally, full)
        perf.append(perf_row("trillium", name, budget, tally, full))
    kvpress = (
        "skipped (--no-kvpress)"
        if args.no_kvpress
        else run_kvpress(args.model, processor, prompts, budgets, model.config.eos_token_id)
    )
    if isinstance(kvpress, dict):
        kvpress_full = kvpress.pop(("none", 1.0))  # kvpress's own uncompressed run: its timing baseline
        for (press, budget), tally in sorted(kvpress.items()):
            rows += tally_rows("kvpress", press, budget, tally, full)
            perf.append(perf_row("kvpress", press, budget, tally, kvpress_full))
        kvpress_status = "ran"
    else:
        kvpress_status = kvpress
    observations = attention_observations(model, prompts)
    lengths = [p.input_ids.shape[1] for p in prompts]
    meta = {
        "name": args.name,
        "model": str(args.model.relative_to(REPO) if args.model.is_relative_to(REPO) else args.model),
        "model_sha256": weights_digest(args.model),
        "models_version": trillium.models.__version__,
        "per_family": args.per_family,
        "frames": frames,
        "frame_size": args.frame_size,
        "prompt_tokens": [min(lengths), max(lengths)],
        "budgets": budgets,
        "kvpress": kvpress_status,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "protocol": (
            "question-agnostic: context (before the question) prefilled and compressed, question run"
            " through the compressed cache uncompressed, positions continuing; greedy decode, 3 tokens"
        ),
    }
    write_outputs(args.out_dir / args.name, meta, rows, perf, observations)


def weights_digest(model_dir: Path) -> str:
    """The first 12 hex digits of the SHA-256 of ``model.safetensors``: which weights were measured."""
    return hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()[:12]


def write_outputs(stem: Path, meta: dict, rows: list[dict], perf: list[dict], observations: dict) -> None:
    """Write ``stem.json``, ``stem.png``, ``stem-observations.png`` and ``stem.md``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(
        json.dumps({**meta, "rows": rows, "perf": perf, "observations": observations}, indent=1)
    )
    series: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        if row["family"] == "overall" and row["policy"] != "full":
            series[(row["impl"], row["policy"])].append((row["budget"], row["accuracy"]))
    full_accuracy = next(r["accuracy"] for r in rows if r["policy"] == "full" and r["family"] == "overall")
    figure, axis = plt.subplots(figsize=(8, 5))
    colours = plt.get_cmap("tab20").colors
    for index, ((impl, policy), points) in enumerate(sorted(series.items())):
        points.sort()
        style = "--" if impl == "kvpress" else ":" if policy == "random" else "-"
        axis.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            style,
            marker="o",
            color=colours[index % len(colours)],
            label=f"{impl}:{policy}",
        )
    axis.axhline(full_accuracy, color="black", lw=1, label="full cache")
    axis.set_xscale("log")
    axis.set_xlabel("KV budget (fraction kept)")
    axis.set_ylabel("accuracy (overall)")
    axis.legend(fontsize=7, ncol=2)
    axis.set_title(f"av-tiny on held-out AVQA-synth ({_clips(meta)})")
    figure.tight_layout()
    figure.savefig(stem.with_suffix(".png"), dpi=110)

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    layers = range(len(observations["cross_modal_share"]))
    for name in ("question_to_video", "question_to_audio", "question_to_text"):
        axes[0].plot(layers, observations[name], marker="o", label=name.removeprefix("question_to_"))
    axes[0].set_title("question attention by modality (AccKV)")
    axes[1].plot(layers, observations["cross_modal_share"], marker="o")
    axes[1].set_title("cross-modal attention share (FlowMM rho)")
    for axis in axes:
        axis.set_xlabel("layer")
        axis.legend() if axis is axes[0] else None
    figure.tight_layout()
    figure.savefig(stem.with_name(f"{stem.name}-observations.png"), dpi=110)

    stem.with_suffix(".md").write_text(summary_markdown(meta, rows, perf) + "\n")


def _clips(meta: dict) -> str:
    frames = "/".join(map(str, meta["frames"]))
    low, high = meta["prompt_tokens"]
    return f"{frames} frames of {meta['frame_size']} px, {low}-{high} prompt tokens"


SEED_POLICIES = ("acckv", "purekv", "flowmm", "madakv")


def _accuracy_table(rows: list[dict], budgets, family: str) -> list[str]:
    by_key = {(r["impl"], r["policy"], r["budget"]): r["accuracy"] for r in rows if r["family"] == family}
    series = sorted({(impl, policy) for impl, policy, _ in by_key if policy != "full"})
    lines = [
        "| impl | policy | " + " | ".join(f"{b:.0%}" for b in budgets) + " |",
        "|---|---|" + "---|" * len(budgets),
    ]
    for impl, policy in series:
        cells = [
            f"{100 * by_key[(impl, policy, b)]:.1f}" if (impl, policy, b) in by_key else "–" for b in budgets
        ]
        lines.append(f"| {impl} | {policy} | " + " | ".join(cells) + " |")
    return lines


def _goal_lines(rows: list[dict]) -> list[str]:
    """The issue's goals for the seed policies, checked against this run's numbers."""
    acc = {(r["impl"], r["policy"], r["budget"], r["family"]): r["accuracy"] for r in rows}
    full = acc[("trillium", "full", 1.0, "overall")]
    lines = [
        "| seed policy | drop at 20% (goal <= 1) | drop at 10% (goal <= 3) "
        "| cross-modal at 20% / best baseline | cross-modal at 10% / best baseline |",
        "|---|---|---|---|---|",
    ]
    for policy in SEED_POLICIES:
        cells = []
        for budget in (0.2, 0.1):
            value = acc.get(("trillium", policy, budget, "overall"))
            cells.append("–" if value is None else f"{100 * (full - value):+.1f}")
        for budget in (0.2, 0.1):
            ours = acc.get(("trillium", policy, budget, "cross_modal"))
            baselines = [
                v
                for (impl, name, b, family), v in acc.items()
                if b == budget and family == "cross_modal" and name not in (*SEED_POLICIES, "full", "random")
            ]
            best = max(baselines, default=None)
            cells.append("–" if ours is None or best is None else f"{100 * ours:.1f} / {100 * best:.1f}")
        lines.append(f"| {policy} | " + " | ".join(cells) + " |")
    return lines


def _perf_lines(perf: list[dict], budgets) -> list[str]:
    lines = [
        "| impl | policy | budget | KV bytes / full | prefill / full | decode ms/token / full |",
        "|---|---|---|---|---|---|",
    ]
    for row in sorted(perf, key=lambda r: (r["impl"], r["policy"], -r["budget"])):
        if row["budget"] not in (0.2, 0.1):
            continue
        kv = row["kv_bytes_ratio"]
        prefill = row["prefill_ms"] / row["prefill_ms_full"] if row["prefill_ms_full"] else None
        decode = (
            row["decode_ms_per_token"] / row["decode_ms_per_token_full"]
            if row["decode_ms_per_token_full"]
            else None
        )
        cells = [f"{v:.2f}" if v is not None else "–" for v in (kv, prefill, decode)]
        lines.append(f"| {row['impl']} | {row['policy']} | {row['budget']:.0%} | " + " | ".join(cells) + " |")
    return lines


def summary_markdown(meta: dict, rows: list[dict], perf: list[dict]) -> str:
    """The short markdown summary written beside the JSON."""
    budgets = meta["budgets"]
    full = {r["family"]: r["accuracy"] for r in rows if r["policy"] == "full"}
    family_cells = ", ".join(f"{f} {100 * full[f]:.1f}" for f in (*FAMILIES, "overall") if f in full)
    parts = [
        f"# {meta['name']} ({meta['per_family']} held-out questions per family, {_clips(meta)}; "
        f"kvpress: {meta['kvpress']})",
        "",
        f"Model: `{meta['model']}` (trillium-models {meta['models_version']}, weights sha256 "
        f"{meta['model_sha256']}). Full cache (%): {family_cells}. Protocol: {meta['protocol']}.",
        "",
        "## Accuracy, overall (%)",
        *_accuracy_table(rows, budgets, "overall"),
        "",
        "## Accuracy, cross-modal family (%)",
        *_accuracy_table(rows, budgets, "cross_modal"),
        "",
        "## Goals of the seed policies",
        "Drop = full-cache minus policy accuracy, in points; cross-modal is compared with the best",
        "baseline (ours or kvpress) at the same budget.",
        "",
        *_goal_lines(rows),
        "",
        "## Cost at 20% and 10% (ratios to the full cache in the same run)",
        "KV bytes: kept context entries plus the question's entries when the first answer token is",
        "chosen; prefill: time to the first token's logits (context + question forwards).",
        "",
        *_perf_lines(perf, budgets),
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    main()
