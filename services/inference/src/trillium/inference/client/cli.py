"""``trillium-inference ask``: stream one answer from a running server and print its compression."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import grpc

from trillium.inference.client.client import InferenceClient
from trillium.inference.client.segments import audio_file, image_file, text, video_path

__all__ = ["ask_main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trillium-inference ask", description="Ask a running InferenceService one question."
    )
    parser.add_argument("question", help="the question (the last text segment)")
    parser.add_argument("--model", required=True, help="a model name from ListModels")
    parser.add_argument("--target", default="127.0.0.1:50051", help="server address (default %(default)s)")
    parser.add_argument("--token", default="", help="bearer token, when the server has auth on")
    parser.add_argument("--image", action="append", default=[], help="an image file (repeatable)")
    parser.add_argument("--video", default=None, help="a video file, or a folder of frames")
    parser.add_argument("--audio", default=None, help="a 16-bit PCM .wav file")
    parser.add_argument("--context", default=None, help="text before the media (e.g. a passage)")
    parser.add_argument("--policy", default="none", help="compression policy (default: the full cache)")
    parser.add_argument("--budget", type=float, default=0.2, help="fraction of the KV cache kept")
    parser.add_argument("--max-new-tokens", type=int, default=0, help="0: the server's default")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds")
    return parser


def ask_main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    try:
        segments = [text(args.context)] if args.context else []
        segments += [image_file(path) for path in args.image]
        if args.video:
            segments.append(video_path(args.video))
        if args.audio:
            segments.append(audio_file(args.audio))
    except (OSError, ValueError) as exc:
        print(f"trillium-inference ask: {exc}", file=sys.stderr)
        return 2
    segments.append(text(args.question))
    budget = 1.0 if args.policy == "none" else args.budget
    with InferenceClient(args.target, token=args.token) as client:
        try:
            for delta in client.stream(
                args.model,
                segments,
                policy=args.policy,
                budget=budget,
                max_new_tokens=args.max_new_tokens,
                temperature=args.temperature,
                timeout=args.timeout,
            ):
                print(delta, end="", flush=True)
        except grpc.RpcError as exc:
            print(f"\n{exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        print()
        print(summary_line(client.last), file=sys.stderr)
    return 0


def summary_line(answer) -> str:
    """One line: policy, tokens and KV bytes kept, time to first token and decode speed."""
    summary, finished = answer.summary, answer.finished
    parts = [f"policy {summary.policy}", f"kept {summary.tokens_kept}/{summary.tokens_before} prompt tokens"]
    if summary.kv_bytes_before:
        parts.append(f"KV {summary.kv_bytes_after / 1e6:.2f}/{summary.kv_bytes_before / 1e6:.2f} MB")
    if finished is not None:
        timing = finished.timing
        parts.append(f"TTFT {timing.time_to_first_token_seconds:.2f} s")
        if timing.time_per_output_token_seconds:
            parts.append(f"{1 / timing.time_per_output_token_seconds:.1f} tokens/s")
        parts.append(f"{finished.usage.completion_tokens} tokens")
    return "[" + ", ".join(parts) + "]"
