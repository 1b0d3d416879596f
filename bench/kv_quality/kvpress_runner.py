"""Runs NVIDIA kvpress presses on av-tiny in kvpress's own environment (transformers 5.2).

Invoked by ``bench/kv_quality/run.py`` with the interpreter of ``.venv-kvpress``; imports nothing of
Trillium. Input: a JSON file with prompts (token ids plus av-tiny's auxiliary ids, whose embedding rows
are added to the token's — the same sum as ``trillium.models.av_tiny.embed_inputs``), the index where
each prompt's question starts, the model folder, presses and budgets.

Protocol: whatever split the harness sends (``question_starts``; Trillium's protocols A, B and C, see
``run.py``): the prefix before the split is compressed, the rest runs through the compressed cache —
kvpress's question-agnostic setting when the split is the question's start. The prompt is embedded
once (the auxiliary ids carry previous tokens, so the pieces are sliced, not re-embedded). For each
press and budget the context (tokens before ``question_start``) is prefilled with the press active
(``with press(model): model.model(...)``, kvpress's documented entry point), which compresses it; the
question then runs through the compressed cache outside the press (not compressed) with position ids
continuing from the context length, the first answer token is read from ``lm_head`` on the question's
last hidden state, and greedy decoding continues with positions after the question. The "none" run
(the timing baseline) prefills the whole prompt in one forward, like Trillium's full cache. Output:
JSON with generated ids, KV bytes held when the first answer token is chosen (kept context plus
question entries), time to the first token's logits and decode time per (press, budget, prompt).
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
    model,
    press,
    input_ids: list[int],
    aux_ids: list[list[int]],
    question_start: int,
    *,
    max_new_tokens: int,
    eos: int,
) -> dict:
    """One prompt: context ``[0, question_start)`` under ``press``, then the question without it.
    ``question_start == len(input_ids)`` prefills the whole prompt in one forward (no question pass)."""
    length = len(input_ids)
    embeds = prompt_embeddings(model, input_ids, aux_ids)
    cache = DynamicCache()
    started = time.perf_counter()
    with press(model) if press is not None else contextlib.nullcontext():
        hidden = model.model(
            inputs_embeds=embeds[:, :question_start], past_key_values=cache
        ).last_hidden_state
    if question_start < length:
        positions = torch.arange(question_start, length).unsqueeze(0)
        hidden = model.model(
            inputs_embeds=embeds[:, question_start:], past_key_values=cache, position_ids=positions
        ).last_hidden_state
    out_logits = model.lm_head(hidden[:, -1:])
    prefill = time.perf_counter() - started
    kv_bytes = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
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
            position_ids=torch.tensor([[length + step]]),
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
    prompts = list(zip(request["prompts"], request["aux_ids"], request["question_starts"], strict=True))
    first = prompts[0]
    run_one(model, None, *first, max_new_tokens=1, eos=request["eos_token_id"])  # warm-up, not timed
    jobs = [("none", 1.0)] + [(name, budget) for name in request["presses"] for budget in request["budgets"]]
    for name, budget in jobs:
        press = None if name == "none" else make_press(name, budget)
        for index, (prompt, aux, start) in enumerate(prompts):
            if not 0 < start <= len(prompt):
                raise ValueError(f"question_starts[{index}] must lie in (0, {len(prompt)}], got {start}")
            run = run_one(
                model,
                press,
                prompt,
                aux,
                len(prompt) if press is None else start,
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
