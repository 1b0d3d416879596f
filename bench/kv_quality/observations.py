"""The seed papers' headline observations, re-measured on both models (av-tiny and SmolLM2-135M).

For every prompt the question's last ``--window`` tokens score every key of every layer (the
observation window, recomputed from the captured attention inputs, as the policies do):

* **MadaKV** ("about 20% of tokens receive about 90% of attention"): per layer, the smallest share
  of keys holding 90% of the window's attention, averaged over heads and prompts.
* **PureKV CLIE** ("lower-layer attention ranks deep-layer importance"): per deeper layer, the
  Spearman correlation between the scoring layer's (``L // 4``) window scores and the layer's own,
  and the same for CLIE's estimate (scoring-layer attention x the layer's value norms).
* **AccKV** ("high layers attend mostly to video") and **FlowMM** ("cross-modal attention grows with
  depth"): per layer, the share of the window's attention on video and on audio, and the share of
  attention between different modalities among the window's rows and FlowMM's sampled media rows
  (av-tiny only: SmolLM2 is text only).

Writes ``kv-observations.json`` (``commit``, ``versions``) and ``kv-observations.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from provenance import git_commit, package_versions  # noqa: E402

from trillium.kvcompress import Modality, TokenLayout  # noqa: E402
from trillium.kvcompress.hf import decoder_layers  # noqa: E402
from trillium.kvcompress.scoring import interaction_ratio, sample_media_rows, spearman_correlation  # noqa: E402
from trillium.kvcompress.scoring.window import gqa_mean, recompute_queries, rows_attention  # noqa: E402


@torch.no_grad()
def window_attention(model, prompt_kwargs: dict, rows: torch.Tensor) -> tuple[list[torch.Tensor], list]:
    """Per layer ``[H_q, P, L]`` attention of ``rows`` and the layer's values ``[H_kv, L, D]``."""
    from transformers import DynamicCache

    layers = decoder_layers(model)
    captured = {}

    def hook(module, args, kwargs):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        captured[module.layer_idx] = (hidden, kwargs["position_embeddings"])

    handles = [layer.self_attn.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers]
    cache = DynamicCache(config=model.config)
    try:
        model(**prompt_kwargs, past_key_values=cache, use_cache=True)
    finally:
        for handle in handles:
            handle.remove()
    probs, values = [], []
    for index, layer in enumerate(layers):
        hidden, embeddings = captured[index]
        queries = recompute_queries(layer.self_attn, hidden, embeddings, rows)
        probs.append(
            rows_attention(queries, cache.layers[index].keys, rows, float(layer.self_attn.scaling))[0]
        )
        values.append(cache.layers[index].values[0])
    return probs, values


def concentration(scores: torch.Tensor, share: float = 0.9) -> float:
    """Smallest fraction of keys holding ``share`` of each head's mass, averaged over heads (``[H, L]``)."""
    ordered = scores.sort(dim=-1, descending=True).values
    cumulative = ordered.cumsum(-1) / ordered.sum(-1, keepdim=True).clamp_min(1e-30)
    needed = (cumulative < share).sum(-1) + 1
    return float((needed.float() / scores.shape[-1]).mean())


def observe(model, prompts: list[tuple[dict, TokenLayout, torch.Tensor]]) -> dict[str, list[float]]:
    """Per-layer observations averaged over ``prompts`` = ``(model kwargs, layout, window rows)``."""
    sums: dict[str, list[list[float]]] = defaultdict(lambda: defaultdict(list))
    for kwargs, layout, rows in prompts:
        media_rows = sample_media_rows(layout, 4)
        all_rows = torch.cat([rows, media_rows]).unique()
        probs, values = window_attention(model, kwargs, all_rows)
        window = torch.isin(all_rows, rows)
        num_kv = values[0].shape[0]
        scores = [gqa_mean(p[:, window].sum(1).unsqueeze(0), num_kv)[0] for p in probs]
        scoring = len(probs) // 4
        for layer, p in enumerate(probs):
            sums["concentration_90"][layer].append(concentration(scores[layer]))
            if layer > scoring:
                clie = scores[scoring] * values[layer].norm(dim=-1)
                sums["spearman_scoring_layer"][layer].append(
                    spearman_correlation(scores[scoring], scores[layer])
                )
                sums["spearman_clie"][layer].append(spearman_correlation(clie, scores[layer]))
            if media_rows.numel():
                mass = p[:, window].sum(-1).clamp_min(1e-30)  # [H, P]
                for name, m in (("window_to_video", Modality.VIDEO), ("window_to_audio", Modality.AUDIO)):
                    part = p[:, window][..., layout.mask(m)].sum(-1) / mass
                    sums[name][layer].append(float(part.mean()))
                sums["interaction_ratio"][layer].append(
                    float(interaction_ratio(p.unsqueeze(0), all_rows, layout)[0])
                )
    return {
        name: [
            statistics.mean(per_layer[layer]) if per_layer.get(layer) else None for layer in range(len(probs))
        ]
        for name, per_layer in sums.items()
    }


def av_tiny_prompts(count: int):
    from trillium.models.av_tiny.evaluate import sample_inputs
    from trillium.models.av_tiny.model import embed_inputs, load_av_tiny
    from trillium.models.avqa.dataset import heldout_samples

    model, processor = load_av_tiny(REPO / "assets" / "models" / "av-tiny")
    prompts = []
    for sample in heldout_samples(count):
        inputs = sample_inputs(processor, sample, 0)
        with torch.no_grad():
            embeds = embed_inputs(model, inputs.input_ids, inputs.aux_ids)
        length = inputs.input_ids.shape[1]
        rows = torch.arange(inputs.question_start, length)[-32:]
        prompts.append(({"inputs_embeds": embeds}, inputs.layout, rows))
    return model, prompts


def smollm2_prompts(model_dir: Path, count: int, target: int):
    from kv_text.run import build_prompts
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    prompts = []
    for prompt in build_prompts(tokenizer, (target,), 1, 100)[:count]:
        rows = torch.arange(prompt.question_start, prompt.length)[-32:]
        prompts.append(({"input_ids": torch.tensor([prompt.ids])}, prompt.layout(prompt.length), rows))
    return model, prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from trillium.models.smollm2 import default_cache_dir

    parser.add_argument("--model-dir", type=Path, default=default_cache_dir() / "smollm2-135m-instruct")
    parser.add_argument("--av-tiny-per-family", type=int, default=4)
    parser.add_argument("--text-prompts", type=int, default=6)
    parser.add_argument("--text-tokens", type=int, default=2048)
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    torch.set_num_threads(2)
    result = {"commit": git_commit(), "versions": package_versions(), "models": {}}
    model, prompts = av_tiny_prompts(args.av_tiny_per_family)
    result["models"]["av-tiny"] = {"prompts": len(prompts), **observe(model, prompts)}
    if (args.model_dir / "config.json").exists():
        model, prompts = smollm2_prompts(args.model_dir, args.text_prompts, args.text_tokens)
        result["models"]["smollm2-135m"] = {"prompts": len(prompts), **observe(model, prompts)}
    else:
        result["models"]["smollm2-135m"] = "not run: make fetch-smollm2"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "kv-observations.json").write_text(json.dumps(result, indent=1))
    _plot(result, args.out_dir / "kv-observations.png")


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("concentration_90", "MadaKV: share of keys holding 90% of attention"),
        ("spearman_clie", "PureKV: Spearman(CLIE estimate, layer's own scores)"),
        ("window_to_video", "AccKV: question attention on video / audio"),
        ("interaction_ratio", "FlowMM: cross-modal interaction ratio rho"),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(18, 4))
    for axis, (key, title) in zip(axes, panels):
        for name, data in result["models"].items():
            if not isinstance(data, dict) or key not in data:
                continue
            layers = [i / max(len(data[key]) - 1, 1) for i in range(len(data[key]))]
            axis.plot(layers, data[key], marker="o", label=name)
            if key == "window_to_video" and "window_to_audio" in data:
                axis.plot(layers, data["window_to_audio"], marker="x", ls="--", label=f"{name} (audio)")
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("relative depth")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
