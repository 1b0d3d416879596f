"""Runs inside .venv-llamacpp: llama.cpp on the SmolLM2 GGUF, one request at a time (the high-level
API serves one sequence), greedy, fixed token counts. Reads a JSON job on stdin, prints JSON rows."""

from __future__ import annotations

import json
import sys
import time

from llama_cpp import Llama


def main() -> None:
    job = json.load(sys.stdin)
    model = Llama(job["gguf"], n_ctx=job["n_ctx"], n_threads=job["threads"], n_batch=512, verbose=False)
    results = []
    for prompt in job["prompts"]:
        model.reset()
        started = time.perf_counter()
        times = []
        for count, _token in enumerate(model.generate(prompt, temp=0.0, reset=True), start=1):
            times.append(time.perf_counter())
            if count >= job["max_new_tokens"]:
                break
        results.append({"submitted": started, "token_times": times, "prompt_tokens": len(prompt)})
    json.dump({"version": __import__("llama_cpp").__version__, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
