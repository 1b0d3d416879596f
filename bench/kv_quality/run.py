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
import sys
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
from trillium.models.avqa.dataset import HELDOUT_FRAMES, heldout_samples, validation_samples

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from provenance import git_commit, package_versions  # noqa: E402

DEFAULT_MODEL = REPO / "assets" / "models" / "av-tiny"
KVPRESS_PYTHON = REPO / ".venv-kvpress" / "bin" / "python"
BUDGETS = (0.4, 0.2, 0.1, 0.05)
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
    model,
    processor,
    per_family: int,
    n_frames: tuple[int, ...] = HELDOUT_FRAMES,
    frame_size: int = 40,
    *,
    split: str = "heldout",
) -> list[Prompt]:
    prompts = []
    samples = (heldout_samples if split == "heldout" else validation_samples)(
        per_family, n_frames, frame_size
    )
    for sample in samples:
        inputs = sample_inputs(processor, sample, 0)
        question = sample.questions[0]
        embeds = embed_inputs(model, inputs.input_ids, inputs.aux_ids)
        prompts.append(Prompt(inputs, embeds, question.family, list(question.answer)))
    return prompts


PROTOCOLS = ("A", "B", "C")
PROTOCOL_TEXT = {
    "A": "question-agnostic: the context (before the question) is prefilled and compressed without"
    " seeing the question; the question runs through the compressed cache, uncompressed",
    "B": "the papers': the whole prompt with its question is prefilled and compressed; the first answer"
    " token comes from the prefill's logits, the rest is decoded from the compressed cache",
    "C": "question-aware scoring, answer through the cache: the prompt without its last token is"
    " prefilled and compressed (the question is scored); the last token and every answer token run"
    " through the compressed cache",
}


def compressed_span(protocol: str, prompt_length: int, question_start: int) -> int:
    """Tokens ``[0, n)`` prefilled and compressed under ``protocol``; ``[n, L)`` run through the
    compressed cache afterwards (uncompressed, positions continuing)."""
    if protocol == "A":
        return question_start
    if protocol == "B":
        return prompt_length
    if protocol == "C":
        return prompt_length - 1
    raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")


def run_trillium(model, processor, prompts, policy, protocol: str = "A") -> Tally:
    """``policy`` compresses the span of ``protocol`` (:func:`compressed_span`), the rest of the
    prompt runs through the kept entries. KV bytes: exact compressed bytes plus the dense entries of
    the tokens after the span (a prompt token's bytes, ``bytes_before / span``, times their count)."""
    tally = Tally()
    eos = model.config.eos_token_id
    for prompt in prompts:
        length = prompt.input_ids.shape[1]
        span = compressed_span(protocol, length, prompt.question_start)
        result = generate_with_policy(
            model,
            inputs_embeds=prompt.embeds[:, :span],
            question_embeds=prompt.embeds[:, span:] if span < length else None,
            layout=prompt.layout.select(range(span)),
            policy=policy,
            max_new_tokens=MAX_NEW_TOKENS,
            eos_token_id=eos,
            show_progress=False,
        )
        tally.add(prompt.family, processor.decode(result.tokens) == prompt.answer)
        report = result.report
        tail_bytes = report.bytes_before * (length - span) / span
        tally.kv_bytes += (report.bytes_after + tail_bytes) / len(prompts)
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
    model_dir: Path, processor, prompts, budgets, *, eos_token_id: int, protocol: str = "A"
) -> dict[tuple[str, float], Tally] | str:
    """kvpress in its own environment, the prompts split as ``protocol`` splits them (the press is
    active while the compressed span is prefilled); returns tallies, or the reason it could not run."""
    if not KVPRESS_PYTHON.exists():
        return "the kvpress environment is missing (make setup-kvpress)"
    with tempfile.TemporaryDirectory() as tmp:
        request = {
            "model": str(model_dir),
            "presses": list(KVPRESS_PRESSES),
            "budgets": list(budgets),
            "prompts": [p.input_ids[0].tolist() for p in prompts],
            "aux_ids": [p.inputs.aux_ids[0].tolist() for p in prompts],
            "question_starts": [
                compressed_span(protocol, p.input_ids.shape[1], p.question_start) for p in prompts
            ],
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


def tally_rows(
    impl: str, policy: str, budget: float, tally: Tally, full: Tally, *, protocol: str
) -> list[dict]:
    full_accuracy = full.accuracy()
    return [
        {
            "impl": impl,
            "protocol": protocol,
            "policy": policy,
            "budget": budget,
            "family": family,
            "accuracy": accuracy,
            "accuracy_full": full_accuracy[family][0],
            "n": n,
        }
        for family, (accuracy, n) in tally.accuracy().items()
    ]


def perf_row(impl: str, policy: str, budget: float, tally: Tally, full: Tally, *, protocol: str) -> dict:
    return {
        "impl": impl,
        "protocol": protocol,
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
    parser.add_argument(
        "--protocols", default=",".join(PROTOCOLS), help="comma-separated protocols (A, B, C; see --help)"
    )
    parser.add_argument(
        "--split",
        choices=("heldout", "validation"),
        default="heldout",
        help="held-out samples (reported) or the validation split (where choices are made)",
    )
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads here and in the kvpress runner (1: stable timings on a shared machine)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    commit = git_commit()  # the code this run measures, read before it starts
    budgets = tuple(float(b) for b in args.budgets.split(","))
    names = [s.name for s in list_policies()] if args.policies == "all" else args.policies.split(",")
    names = list(dict.fromkeys(["random", *names]))  # the floor is part of every report

    model, processor = load_av_tiny(args.model)
    model.eval()
    frames = tuple(int(f) for f in args.frames.split(","))
    prompts = build_prompts(model, processor, args.per_family, frames, args.frame_size, split=args.split)
    protocols = tuple(args.protocols.split(","))
    run_full(model, processor, prompts[:1])  # warm-up (first-call allocations), not reported
    full = run_full(model, processor, prompts)
    rows = tally_rows("trillium", "full", 1.0, full, full, protocol="-")
    perf = []
    jobs = [(protocol, name, budget) for protocol in protocols for name in names for budget in budgets]
    for protocol, name, budget in tqdm(jobs, desc="bench-kv"):
        tally = run_trillium(model, processor, prompts, make_policy(name, budget=budget), protocol)
        rows += tally_rows("trillium", name, budget, tally, full, protocol=protocol)
        perf.append(perf_row("trillium", name, budget, tally, full, protocol=protocol))
    kvpress_status = "skipped (--no-kvpress)" if args.no_kvpress else "ran"
    for protocol in () if args.no_kvpress else protocols:
        kvpress = run_kvpress(
            args.model, processor, prompts, budgets, eos_token_id=model.config.eos_token_id, protocol=protocol
        )
        if not isinstance(kvpress, dict):
            kvpress_status = kvpress
            break
        kvpress_full = kvpress.pop(("none", 1.0))  # kvpress's own uncompressed run: its timing baseline
        for (press, budget), tally in sorted(kvpress.items()):
            rows += tally_rows("kvpress", press, budget, tally, full, protocol=protocol)
            perf.append(perf_row("kvpress", press, budget, tally, kvpress_full, protocol=protocol))
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
        "split": args.split,
        "protocols": {p: PROTOCOL_TEXT[p] for p in protocols},
        "commit": commit,
        "versions": package_versions(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "decode": f"greedy, {MAX_NEW_TOKENS} tokens, positions continuing after the prompt",
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
    plot_protocol = "C" if "C" in meta["protocols"] else next(iter(meta["protocols"]))
    series: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        if row["family"] == "overall" and row["policy"] != "full" and row["protocol"] == plot_protocol:
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
    axis.set_title(
        f"av-tiny, AVQA-synth {meta['split']}, protocol {plot_protocol} ({_clips(meta)})", fontsize=9
    )
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


def _accuracy_table(rows: list[dict], budgets, family: str, protocol: str) -> list[str]:
    by_key = {
        (r["impl"], r["policy"], r["budget"]): r["accuracy"]
        for r in rows
        if r["family"] == family and r["protocol"] == protocol
    }
    series = sorted({(impl, policy) for impl, policy, _ in by_key})
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


def goal_checks(rows: list[dict], budget: float = 0.2) -> list[dict]:
    """The issue's goals for the seed policies at ``budget``, checked against this run's rows.

    Protocol C: within 3 points of the full cache and at or above the best baseline (ours or
    kvpress's). Protocol A: at or above H2O and kvpress's ExpectedAttention; AccKV's cross-modal
    accuracy at least 80%."""
    acc = {(r["impl"], r["policy"], r["protocol"], r["budget"], r["family"]): r["accuracy"] for r in rows}
    full = acc.get(("trillium", "full", "-", 1.0, "overall"))
    checks = []

    def best_baseline(protocol: str) -> float | None:
        values = [
            v
            for (impl, name, p, b, family), v in acc.items()
            if p == protocol
            and b == budget
            and family == "overall"
            and name not in (*SEED_POLICIES, "full", "random")
        ]
        return max(values, default=None)

    for policy in SEED_POLICIES:
        c = acc.get(("trillium", policy, "C", budget, "overall"))
        a = acc.get(("trillium", policy, "A", budget, "overall"))
        targets = {
            "C: within 3 points of full": (c, None if full is None else full - 0.03),
            "C: >= best baseline": (c, best_baseline("C")),
            "A: >= h2o": (a, acc.get(("trillium", "h2o", "A", budget, "overall"))),
            "A: >= kvpress expected_attention": (
                a,
                acc.get(("kvpress", "expected_attention", "A", budget, "overall")),
            ),
        }
        if policy == "acckv":
            targets["A: cross-modal >= 80%"] = (
                acc.get(("trillium", policy, "A", budget, "cross_modal")),
                0.8,
            )
        for goal, (value, target) in targets.items():
            met = None if value is None or target is None else value >= target - 1e-9
            checks.append({"policy": policy, "goal": goal, "value": value, "target": target, "met": met})
    return checks


def _goal_lines(rows: list[dict]) -> list[str]:
    lines = ["| seed policy | goal (20% budget) | value | target | met |", "|---|---|---|---|---|"]
    for check in goal_checks(rows):
        value, target = ("–" if check[k] is None else f"{100 * check[k]:.1f}" for k in ("value", "target"))
        met = {None: "–", True: "yes", False: "**no**"}[check["met"]]
        lines.append(f"| {check['policy']} | {check['goal']} | {value} | {target} | {met} |")
    return lines


def _perf_lines(perf: list[dict], protocol: str) -> list[str]:
    lines = [
        "| impl | policy | budget | KV bytes / full | prefill / full | decode ms/token / full |",
        "|---|---|---|---|---|---|",
    ]
    for row in sorted(perf, key=lambda r: (r["impl"], r["policy"], -r["budget"])):
        if row["budget"] not in (0.2, 0.1) or row["protocol"] != protocol:
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
        f"# {meta['name']} ({meta['per_family']} {meta['split']} questions per family, {_clips(meta)}; "
        f"kvpress: {meta['kvpress']})",
        "",
        f"Model: `{meta['model']}` (trillium-models {meta['models_version']}, weights sha256 "
        f"{meta['model_sha256']}); commit {meta['commit'][:12]}. Full cache (%): {family_cells}. "
        f"Decoding: {meta['decode']}.",
        "",
        "Protocols:",
        *(f"- **{p}**: {text}." for p, text in meta["protocols"].items()),
        "",
        "## Goals of the seed policies",
        "",
        *_goal_lines(rows),
    ]
    for protocol in meta["protocols"]:
        parts += [
            "",
            f"## Protocol {protocol}: accuracy, overall (%)",
            *_accuracy_table(rows, budgets, "overall", protocol),
            "",
            f"## Protocol {protocol}: accuracy, cross-modal family (%)",
            *_accuracy_table(rows, budgets, "cross_modal", protocol),
        ]
    parts += [
        "",
        "## Cost at 20% and 10%, protocol A (ratios to the full cache in the same run)",
        "KV bytes: kept context entries plus the question's entries when the first answer token is",
        "chosen; prefill: time to the first token's logits (context + question forwards).",
        "",
        *_perf_lines(perf, "A"),
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    main()
