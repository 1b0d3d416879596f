"""Runs NVIDIA kvpress presses on the bench-kv-text prompts in kvpress's own environment (transformers 5.2).

Invoked by ``bench/kv_text/run.py`` with the interpreter of ``.venv-kvpress``; imports nothing of
Trillium. Each prompt (token ids, question start, reference answer ids and item spans) is prefilled
once, densely, with the answer appended (teacher forcing); pre-hooks record each attention layer's
input hidden states and position embeddings, and the cache keeps every layer's keys and values.
Then, for each press, budget and protocol, the press's own ``compress(module, hidden_states, keys,
values, attentions=None, kwargs)`` runs on every layer over the compressed span (protocol A: the
context before the question; B: the whole prompt) — the call kvpress's forward hook makes during a
prefill, on the same tensors, since a layer's compression never changes the hidden states it passes
on (the press is set up as ``press(model)`` sets it up: ``post_init_from_model`` and each
attention module's ``rotary_emb``; checked: the same accuracy as the press active during a real
prefill). The rest of the prompt and the answer then run through the compressed ``DynamicCache`` with
positions continuing from the original length (as kvpress's pipeline decodes), and each answer item
is scored by teacher-forced greedy match, as in ``run.py``.
"""

from __future__ import annotations

import argparse
import json

import torch
from transformers import AutoModelForCausalLM, DynamicCache


def make_press(name: str, budget: float):
    import kvpress

    classes = {
        "snapkv": kvpress.SnapKVPress,
        "streaming_llm": kvpress.StreamingLLMPress,
        "expected_attention": kvpress.ExpectedAttentionPress,
        "pyramidkv": kvpress.PyramidKVPress,
        "knorm": kvpress.KnormPress,
        "tova": kvpress.TOVAPress,
        "keydiff": kvpress.KeyDiffPress,
    }
    return classes[name](compression_ratio=1.0 - budget)


def item_accuracy(predicted: torch.Tensor, answer_ids: list[int], spans: list[list[int]]) -> float:
    target = torch.tensor(answer_ids)
    hits = [bool((predicted[a:b] == target[a:b]).all()) for a, b in spans]
    return sum(hits) / len(hits)


@torch.no_grad()
def prefill(model, ids: list[int], answer_ids: list[int]):
    layers = model.model.layers
    captured = {}

    def hook(module, args, kwargs):
        captured[module.layer_idx] = (
            kwargs["hidden_states"][:, : len(ids)].clone(),
            kwargs["position_embeddings"],
        )

    handles = [layer.self_attn.register_forward_pre_hook(hook, with_kwargs=True) for layer in layers]
    cache = DynamicCache()
    try:
        logits = model(input_ids=torch.tensor([ids + answer_ids[:-1]]), past_key_values=cache).logits[0]
    finally:
        for handle in handles:
            handle.remove()
    length = len(ids)
    keys = [layer.keys[:, :, :length].clone() for layer in cache.layers]
    values = [layer.values[:, :, :length].clone() for layer in cache.layers]
    return keys, values, captured, logits[length - 1 :].argmax(-1)


@torch.no_grad()
def run_press(model, press, prompt: dict, prefilled: tuple, *, protocol: str) -> float:
    """Accuracy of ``press`` on one prompt from its ``prefilled`` = :func:`prefill`'s result."""
    keys, values, captured, full_predicted = prefilled
    ids, answer = prompt["ids"], prompt["answer_ids"]
    span = prompt["question_start"] if protocol == "A" else len(ids)
    layers = model.model.layers
    compressed = []
    for index, layer in enumerate(layers):
        hidden, (cos, sin) = captured[index]
        kwargs = {"position_embeddings": (cos[:, :span], sin[:, :span]), "cache_position": torch.arange(span)}
        k, v = press.compress(
            layer.self_attn,
            hidden[:, :span],
            keys[index][:, :, :span],
            values[index][:, :, :span],
            None,
            kwargs,
        )
        compressed.append((k, v))
    cache = DynamicCache()
    for index, (k, v) in enumerate(compressed):
        cache.update(k, v, index)
    tail = ids[span:] + answer[:-1]
    predicted = full_predicted[:1]  # protocol B: the first answer token is the prefill's
    if tail:
        logits = _through_cache(model, cache, tail, span, ragged=len({k.shape[2] for k, _ in compressed}) > 1)
        through_cache = logits[max(len(ids) - 1 - span, 0) :].argmax(-1)
        predicted = through_cache if span < len(ids) else torch.cat([predicted, through_cache])
    return item_accuracy(predicted, answer, prompt["item_spans"])


def _through_cache(model, cache, tail: list[int], start: int, *, ragged: bool) -> torch.Tensor:
    """``[len(tail), vocab]`` logits of ``tail`` run through ``cache`` at positions ``start...``.

    Layers of different lengths (PyramidKV) get one token per forward: transformers sizes the
    attention mask of a multi-token forward by the first layer's length, which fails on the others;
    a single query needs no mask (kvpress's pipeline decodes this way too)."""
    if not ragged:
        return model(
            input_ids=torch.tensor([tail]),
            position_ids=torch.arange(start, start + len(tail)).unsqueeze(0),
            past_key_values=cache,
        ).logits[0]
    steps = [
        model(
            input_ids=torch.tensor([[token]]), position_ids=torch.tensor([[start + i]]), past_key_values=cache
        ).logits[0, -1]
        for i, token in enumerate(tail)
    ]
    return torch.stack(steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("request")
    parser.add_argument("output")
    args = parser.parse_args()
    with open(args.request) as f:
        request = json.load(f)
    torch.set_num_threads(request["threads"])
    model = AutoModelForCausalLM.from_pretrained(request["model"], attn_implementation="sdpa").eval()
    for layer in model.model.layers:  # what press(model) sets up before its hooks run
        layer.self_attn.rotary_emb = model.model.rotary_emb
    results = []
    for index, prompt in enumerate(request["prompts"]):
        prefilled = prefill(model, prompt["ids"], prompt["answer_ids"])
        for name in request["presses"]:
            for budget in request["budgets"]:
                press = make_press(name, budget)
                press.post_init_from_model(model)
                for protocol in request["protocols"]:
                    accuracy = run_press(model, press, prompt, prefilled, protocol=protocol)
                    results.append(
                        {
                            "press": name,
                            "budget": budget,
                            "protocol": protocol,
                            "prompt": index,
                            "accuracy": accuracy,
                        }
                    )
        print(f"kvpress: prompt {index + 1}/{len(request['prompts'])}", flush=True)
    import kvpress
    import transformers

    meta = {"kvpress": getattr(kvpress, "__version__", "0.5.5"), "transformers": transformers.__version__}
    with open(args.output, "w") as f:
        json.dump({"meta": meta, "results": results}, f)


if __name__ == "__main__":
    main()
