"""Runs NVIDIA kvpress presses on av-tiny in kvpress's own environment (transformers 5.2).

Invoked by ``bench/kv_quality/run.py`` with the interpreter of ``.venv-kvpress``; imports nothing of
Trillium. Input: a JSON file with prompts (token ids), the model folder, presses and budgets. For each
press and budget it compresses the whole prompt during prefill (``with press(model): model.model(...)``,
kvpress's documented entry point), then decodes greedily with position ids continuing from the
original prompt length — the same protocol as Trillium's harness. Output: JSON with generated ids and
timings per (press, budget, prompt).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM, DynamicCache

PRESSES = ("snapkv", "streaming_llm", "expected_attention", "pyramidkv")


def make_press(name: str, budget: float):
    import kvpress

    ratio = 1.0 - budget
    classes = {
        "snapkv": kvpress.SnapKVPress,
        "streaming_llm": kvpress.StreamingLLMPress,
        "expected_attention": kvpress.ExpectedAttentionPress,
        "pyramidkv": kvpress.PyramidKVPress,
    }
    return classes[name](compression_ratio=ratio)


@torch.no_grad()
def run_one(model, press, input_ids: list[int], max_new_tokens: int, eos: int) -> dict:
    ids = torch.tensor([input_ids])
    cache = DynamicCache()
    started = time.perf_counter()
    with press(model):
        hidden = model.model(input_ids=ids, past_key_values=cache).last_hidden_state
    # Prompt hidden states come from full attention (the press compresses each layer's cache after
    # its attention ran), exactly like Trillium's prefill; the first answer token is read from them.
    out_logits = model.lm_head(hidden[:, -1:])
    prefill = time.perf_counter() - started
    kv_bytes = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    position = ids.shape[1]
    tokens, decode = [], 0.0
    token = int(out_logits[0, -1].argmax())
    for step in range(max_new_tokens):
        tokens.append(token)
        if token == eos or step == max_new_tokens - 1:
            break
        begin = time.perf_counter()
        out = model(
            input_ids=torch.tensor([[token]]),
            past_key_values=cache,
            position_ids=torch.tensor([[position + step]]),
        )
        decode += time.perf_counter() - begin
        token = int(out.logits[0, -1].argmax())
    return {"tokens": tokens, "kv_bytes": kv_bytes, "prefill_s": prefill, "decode_s": decode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("request", help="JSON written by run.py")
    parser.add_argument("output", help="where to write the results JSON")
    args = parser.parse_args()
    with open(args.request) as f:
        request = json.load(f)
    torch.set_num_threads(request.get("threads", torch.get_num_threads()))
    model = AutoModelForCausalLM.from_pretrained(request["model"], attn_implementation="sdpa").eval()
    results = []
    for name in request["presses"]:
        for budget in request["budgets"]:
            press = make_press(name, budget)
            for index, prompt in enumerate(request["prompts"]):
                run = run_one(model, press, prompt, request["max_new_tokens"], request["eos_token_id"])
                results.append({"press": name, "budget": budget, "prompt": index, **run})
    import kvpress
    import transformers

    meta = {"kvpress": getattr(kvpress, "__version__", "0.5.5"), "transformers": transformers.__version__}
    with open(args.output, "w") as f:
        json.dump({"meta": meta, "results": results}, f)


if __name__ == "__main__":
    main()
