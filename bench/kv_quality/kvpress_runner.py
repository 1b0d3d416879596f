"""Runs NVIDIA kvpress presses on av-tiny in kvpress's own environment (transformers 5.2).

Invoked by ``bench/kv_quality/run.py`` with the interpreter of ``.venv-kvpress``; imports nothing of
Trillium. Input: a JSON file with prompts (token ids plus av-tiny's auxiliary ids, whose embedding rows
are added to the token's — the same sum as ``trillium.models.av_tiny.embed_inputs``), the model
folder, presses and budgets. For each
press and budget it compresses the whole prompt during prefill (``with press(model): model.model(...)``,
kvpress's documented entry point), then decodes greedily with position ids continuing from the
original prompt length — the same protocol as Trillium's harness. Output: JSON with generated ids and
timings per (press, budget, prompt).
"""

from __future__ import annotations

import argparse
import contextlib
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
def prompt_embeddings(model, input_ids: list[int], aux_ids: list[list[int]]) -> torch.Tensor:
    """``[1, L, hidden]``: embedding of each token plus those of its auxiliary ids (-1 = none)."""
    table = model.get_input_embeddings()
    ids, aux = torch.tensor([input_ids]), torch.tensor([aux_ids])
    present = (aux >= 0).unsqueeze(-1).to(table.weight.dtype)
    return table(ids) + (table(aux.clamp_min(0)) * present).sum(dim=2)


def run_one(
    model, press, input_ids: list[int], aux_ids: list[list[int]], *, max_new_tokens: int, eos: int
) -> dict:
    ids = torch.tensor([input_ids])
    cache = DynamicCache()
    started = time.perf_counter()
    with press(model) if press is not None else contextlib.nullcontext():
        embeds = prompt_embeddings(model, input_ids, aux_ids)
        hidden = model.model(inputs_embeds=embeds, past_key_values=cache).last_hidden_state
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
    # "none" = the uncompressed cache in this same process: kvpress timings are reported as ratios to it.
    first = (request["prompts"][0], request["aux_ids"][0])
    run_one(model, None, *first, max_new_tokens=1, eos=request["eos_token_id"])  # warm-up, not timed
    jobs = [("none", 1.0)] + [(name, budget) for name in request["presses"] for budget in request["budgets"]]
    for name, budget in jobs:
        press = None if name == "none" else make_press(name, budget)
        for index, (prompt, aux) in enumerate(zip(request["prompts"], request["aux_ids"], strict=True)):
            run = run_one(
                model,
                press,
                prompt,
                aux,
                max_new_tokens=request["max_new_tokens"],
                eos=request["eos_token_id"],
            )
            results.append({"press": name, "budget": budget, "prompt": index, **run})
    import kvpress
    import transformers

    meta = {"kvpress": getattr(kvpress, "__version__", "0.5.5"), "transformers": transformers.__version__}
    with open(args.output, "w") as f:
        json.dump({"meta": meta, "results": results}, f)


if __name__ == "__main__":
    main()
