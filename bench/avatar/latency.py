"""Animate latency over real gRPC: speech chunks in, rendered frames out.

Starts the avatar service as a child process (``trillium-avatar serve`` on 127.0.0.1 with the
shipped assets; ``OMP_NUM_THREADS`` = ``--threads``) and drives Animate streams with the shipped
speech sample (``assets/avatars/speech/hello.wav``, 3.4 s, 16 kHz) cut into PCM chunks of ``c`` ms:

- ``realtime``: chunk k leaves at ``t0 + k c`` — as a live capture that started at ``t0 - c`` would
  deliver it, the moment it is complete — and EndOfStream when the audio is over;
- ``burst``: all chunks back to back, as fast as the stream accepts them.

Each configuration (frame size, fps, chunk length, pace, input sample rate, 1..N concurrent streams,
JPEG frames) reports, on the client's clock:

- ``first_frame_ms``: first audio chunk sent -> first frame received (mean and max over streams);
- ``first_frame_floor_ms``: the part of that the pacing forces — in real time, the time until the
  chunk completing frame 0's input has been sent (the motion model's 160 ms feature + 80 ms smoothing
  look-ahead and the frame clock's one keyframe); 0 in burst mode;
- ``frame_latency_ms`` p50/p90/p99/max: per frame, received minus the send time of the input message
  that made it computable. That message is found by replaying the server's own input pipeline
  (``AudioMotion`` with its resampler, ``FrameClock``) on the same chunks in this process, so the
  figure excludes the algorithmic look-ahead: it is the service's processing, queueing and
  transport time;
- ``av_lag_ms`` p50/p90/p99 (real time only): frame received minus the wall time its audio instant
  was captured — the lip lag a viewer of a live stream would see;
- ``delivered_fps`` = (frames - 1) / (last - first receive) over the steady-state frames (those
  completed by audio chunks, not the look-ahead tail flushed at EndOfStream), mean over streams;
  frames expected, received, ``dropped`` (the server's back-pressure count) and ``missing``;
- the server's own per-frame render (p50, p90), encode and render + encode ms (p50), mean JPEG size.

Baseline in the same run: ``direct_ms`` — the same render + JPEG encode called in this process
without gRPC, audio model or queues (median of 10 frames on a worker thread, measured just before
each configuration so it sees the same machine load); ``overhead_ratio`` = frame latency p50 /
``direct_ms``. When the renderer cannot keep up with fps x streams, frames wait in the server's
render job list (only the rendered-frame queue is bounded and drops), so latency and lag grow along
the stream instead.
``cold_first_frame_ms`` is the very first stream after start-up (it loads the motion model); the
measured streams follow a warm-up stream.

Writes the ``latency`` section of ``<out-dir>/avatar.json`` and ``<out-dir>/avatar-latency.png``.

    python bench/avatar/latency.py            # about a minute
    python bench/avatar/latency.py --quick    # tiny smoke run (a few seconds after start-up)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import numpy as np
import torch

from trillium.avatar.core import load_motion_translator
from trillium.avatar.core.audio import resample
from trillium.avatar.core.speech_data import read_wav
from trillium.avatar.service.animate import AudioMotion
from trillium.avatar.service.app import AVATARS_DIR_ENV, SERVICE_NAME
from trillium.avatar.service.encoding import encode_image
from trillium.avatar.service.registry import AvatarRegistry
from trillium.avatar.service.scene import Motion, cpu_backend, render_rgb
from trillium.avatar.service.streaming import FrameClock
from trillium.avatar.service.validation import render_settings
from trillium.avatar.v1 import avatar_pb2, avatar_pb2_grpc
from trillium.common.v1 import media_pb2
from trillium.servicekit.probes import wait_until_serving
from trillium.servicekit.processes import ServiceProcess

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling results helper
from avatar_results import merge_results

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "assets" / "avatars"
AVATAR = "procedural-head"
SPEECH = ASSETS / "speech" / "hello.wav"
MOTION_WEIGHTS = ASSETS / "motion-translator" / "motion_translator.safetensors"


@dataclass(frozen=True)
class StreamConfig:
    name: str
    size: int
    fps: float
    chunk_ms: int
    pace: str  # "realtime" or "burst"
    streams: int = 1
    sample_rate: int = 16_000


@dataclass
class StreamRun:
    """Client-side record of one Animate stream (perf_counter seconds)."""

    send_times: list[float] = field(default_factory=list)  # audio chunks..., then EndOfStream
    frames: list[tuple[int, float, float, float, float, int]] = field(default_factory=list)
    # (index, timestamp, received, server render s, server encode s, bytes)
    stats: avatar_pb2.StreamStats | None = None
    error: str = ""


def full_configs() -> list[StreamConfig]:
    rt = [StreamConfig(f"realtime {c} ms, 256px", 256, 25.0, c, "realtime") for c in (20, 40, 80)]
    return [
        *rt,
        StreamConfig("realtime 40 ms, 512px", 512, 25.0, 40, "realtime"),
        StreamConfig("realtime 40 ms, 256px, 48 kHz in", 256, 25.0, 40, "realtime", sample_rate=48_000),
        StreamConfig("burst 40 ms, 256px", 256, 25.0, 40, "burst"),
        StreamConfig("burst 40 ms, 512px", 512, 25.0, 40, "burst"),
        *(
            StreamConfig(f"realtime 40 ms, {s}px, {n} streams", s, 25.0, 40, "realtime", streams=n)
            for s, n in ((256, 2), (256, 4), (512, 2))
        ),
    ]


def quick_configs() -> list[StreamConfig]:
    return [
        StreamConfig("realtime 80 ms, 32px", 32, 10.0, 80, "realtime"),
        StreamConfig("burst 40 ms, 32px", 32, 10.0, 40, "burst"),
        StreamConfig("realtime 80 ms, 32px, 48 kHz in", 32, 10.0, 80, "realtime", sample_rate=48_000),
        StreamConfig("realtime 80 ms, 32px, 2 streams", 32, 10.0, 80, "realtime", streams=2),
    ]


def speech_at(rate: int, max_seconds: float | None) -> np.ndarray:
    """The shipped sample as float32 [N] at ``rate`` (resampled offline when not 16 kHz)."""
    pcm, speech_rate = read_wav(SPEECH)
    if max_seconds is not None:
        pcm = pcm[: int(max_seconds * speech_rate)]
    signal = torch.from_numpy(pcm.astype(np.float32) / 32768)
    return resample(signal, speech_rate, rate).numpy() if rate != speech_rate else signal.numpy()


def chunk_requests(signal: np.ndarray, rate: int, chunk_ms: int) -> tuple[list, list[np.ndarray]]:
    """(AnimateRequests with s16le audio chunks, the float chunks they carry)."""
    step = rate * chunk_ms // 1000
    pieces = [signal[i : i + step] for i in range(0, signal.shape[0], step)]
    requests = []
    for k, piece in enumerate(pieces):
        pcm = np.clip(np.round(piece * 32767), -32768, 32767).astype("<i2")
        audio = media_pb2.Audio(
            encoding=media_pb2.AUDIO_ENCODING_PCM_S16LE, data=pcm.tobytes(), sample_rate_hz=rate, channels=1
        )
        chunk = avatar_pb2.AudioChunk(audio=audio, timestamp_seconds=k * step / rate)
        requests.append(avatar_pb2.AnimateRequest(audio=chunk))
    decoded = [np.frombuffer(r.audio.audio.data, "<i2").astype(np.float32) / 32768 for r in requests]
    return requests, decoded


def frame_triggers(model, avatar, chunks: list[np.ndarray], rate: int, fps: float) -> list[int]:
    """For every frame the server will send, the index of the message completing its input
    (``len(chunks)`` = EndOfStream), by replaying the server's AudioMotion + FrameClock."""
    audio, clock = AudioMotion(model, avatar, 0, 0.0, rate), FrameClock(fps)
    triggers: list[int] = []

    def advance(keyframes, message: int) -> None:
        for timestamp, motion in keyframes:
            triggers.extend(message for _ in clock.advance(timestamp, motion))

    for k, chunk in enumerate(chunks):
        advance(audio.push(chunk), k)
    advance(audio.flush(), len(chunks))
    triggers.extend(len(chunks) for _ in clock.finish())
    return triggers


def run_stream(
    target: str, config: StreamConfig, requests: list, barrier: threading.Barrier | None
) -> StreamRun:
    run = StreamRun()
    chunk_seconds = config.chunk_ms / 1000
    settings = avatar_pb2.RenderSettings(
        width=config.size, height=config.size, encoding=avatar_pb2.FRAME_ENCODING_JPEG
    )
    header = avatar_pb2.AnimateConfig(avatar_id=AVATAR, settings=settings, fps=config.fps)

    def messages():
        yield avatar_pb2.AnimateRequest(config=header)
        start = time.perf_counter()
        for k, request in enumerate([*requests, avatar_pb2.AnimateRequest(end=avatar_pb2.EndOfStream())]):
            if config.pace == "realtime":
                time.sleep(max(0.0, start + k * chunk_seconds - time.perf_counter()))
            run.send_times.append(time.perf_counter())
            yield request

    with grpc.insecure_channel(target) as channel:
        stub = avatar_pb2_grpc.AvatarServiceStub(channel)
        grpc.channel_ready_future(channel).result(timeout=30)
        if barrier is not None:
            barrier.wait(timeout=60)
        try:
            for response in stub.Animate(messages(), timeout=300):
                received = time.perf_counter()
                if response.WhichOneof("event") == "frame":
                    f = response.frame
                    run.frames.append(
                        (
                            f.index,
                            f.timestamp_seconds,
                            received,
                            f.render_seconds,
                            f.encode_seconds,
                            len(f.data),
                        )
                    )
                else:
                    run.stats = response.stats
        except grpc.RpcError as error:
            run.error = f"{error.code().name}: {error.details()}"
    return run


def run_config(target: str, config: StreamConfig, requests: list) -> list[StreamRun]:
    if config.streams == 1:
        return [run_stream(target, config, requests, None)]
    barrier = threading.Barrier(config.streams)
    runs: list[StreamRun | None] = [None] * config.streams

    def worker(i: int) -> None:
        runs[i] = run_stream(target, config, requests, barrier)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(config.streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(360)
    return [run or StreamRun(error="stream thread did not finish") for run in runs]


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        "p50": round(p50, 2),
        "p90": round(p90, 2),
        "p99": round(p99, 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def summarise(config: StreamConfig, runs: list[StreamRun], triggers: list[int], direct_ms: float) -> dict:
    chunk_seconds = config.chunk_ms / 1000
    first, latency, lag, delivered, received, dropped, missing = [], [], [], [], 0, 0, 0
    render, encode, compute, sizes = [], [], [], []
    for run in runs:
        if run.error or not run.frames:
            continue
        first_send = run.send_times[0]
        first.append(1000 * (run.frames[0][2] - first_send))
        for index, timestamp, recv, render_s, encode_s, size in run.frames:
            latency.append(1000 * (recv - run.send_times[triggers[index]]))
            if config.pace == "realtime":
                lag.append(1000 * (recv - (first_send - chunk_seconds + timestamp)))
            render.append(1000 * render_s)
            encode.append(1000 * encode_s)
            compute.append(1000 * (render_s + encode_s))
            sizes.append(size)
        # steady state: frames completed by audio chunks, not the burst flushed by EndOfStream
        end_message = len(run.send_times) - 1
        steady = [f[2] for f in run.frames if triggers[f[0]] < end_message]
        if len(steady) > 1 and steady[-1] > steady[0]:
            delivered.append((len(steady) - 1) / (steady[-1] - steady[0]))
        received += len(run.frames)
        dropped += run.stats.frames_dropped if run.stats else 0
        missing += len(triggers) - len(run.frames)
    frame_p = percentiles(latency)
    floor = 1000 * triggers[0] * chunk_seconds if config.pace == "realtime" and triggers else 0.0
    return {
        **asdict(config),
        "errors": [run.error for run in runs if run.error],
        "frames_expected": len(triggers) * config.streams,
        "frames_received": received,
        "frames_dropped": dropped,
        "frames_missing": missing,
        "first_frame_ms_mean": round(statistics.mean(first), 2) if first else None,
        "first_frame_ms_max": round(max(first), 2) if first else None,
        "first_frame_floor_ms": round(floor, 2),
        "frame_latency_ms": frame_p,
        "av_lag_ms": percentiles(lag),
        "delivered_fps": round(statistics.mean(delivered), 2) if delivered else None,
        "server_render_ms_p50": round(statistics.median(render), 2) if render else None,
        "server_render_ms_p90": round(float(np.percentile(render, 90)), 2) if render else None,
        "server_encode_ms_p50": round(statistics.median(encode), 2) if encode else None,
        "server_compute_ms_p50": round(statistics.median(compute), 2) if compute else None,
        "jpeg_bytes_mean": round(statistics.mean(sizes)) if sizes else None,
        "direct_ms": round(direct_ms, 2),
        "overhead_ratio": round(frame_p["p50"] / direct_ms, 2) if frame_p else None,
        "_latencies": latency,  # for the plot; removed before writing
    }


def direct_frame_ms(avatar, size: int, frames: int) -> float:
    """Median ms of render + JPEG encode of one frame in this process (no gRPC, no audio model).

    Timed on a worker thread, as the service's ``RenderWorker`` renders: on a loaded machine the
    OpenMP renderer called from the main thread was measured several times slower (e.g. 264 vs
    45 ms per 512 px frame of 10k Gaussians), which would flatter the service's overhead ratio.
    """
    result: list[float] = []
    worker = threading.Thread(target=lambda: result.append(_direct_frame_ms(avatar, size, frames)))
    worker.start()
    worker.join()
    return result[0]


def _direct_frame_ms(avatar, size: int, frames: int) -> float:
    camera, encoding, quality = render_settings(
        avatar_pb2.RenderSettings(width=size, height=size, encoding=avatar_pb2.FRAME_ENCODING_JPEG),
        "settings",
    )
    jaw = avatar.expression_names.index("jawOpen")
    times = []
    for i in range(frames + 1):
        coefficients = np.zeros(len(avatar.expression_names), dtype=np.float32)
        coefficients[jaw] = (i % 5) / 4
        zeros = np.zeros(3, dtype=np.float32)
        start = time.perf_counter()
        encode_image(
            render_rgb(avatar, Motion(coefficients, zeros, zeros, zeros), camera, cpu_backend()),
            encoding,
            quality,
        )
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times[1:])


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (cdf, bars) = plt.subplots(1, 2, figsize=(12, 4.8))
    for row in rows:
        values = np.sort(row["_latencies"])
        if values.size:
            cdf.step(values, np.arange(1, values.size + 1) / values.size, where="post", label=row["name"])
    cdf.set_xscale("log")
    cdf.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    cdf.set_xlabel("frame latency (ms): input that completes the frame sent -> frame received")
    cdf.set_ylabel("fraction of frames")
    cdf.legend(fontsize=7)
    cdf.grid(alpha=0.3)
    names = [row["name"] for row in rows]
    y = np.arange(len(rows))
    bars.barh(y, [row["first_frame_ms_mean"] or 0 for row in rows], color="tab:blue", label="first frame")
    bars.barh(
        y, [row["first_frame_floor_ms"] for row in rows], color="tab:grey", alpha=0.7, label="pacing floor"
    )
    bars.set_yticks(y, names, fontsize=7)
    bars.invert_yaxis()
    bars.set_xlabel("first audio chunk sent -> first frame received (ms)")
    bars.legend(fontsize=8)
    fig.suptitle("avatar Animate over gRPC (loopback, CPU renderer)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--threads", type=int, default=2, help="server and baseline render threads")
    parser.add_argument("--max-seconds", type=float, default=None, help="use only this much speech")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    configs = quick_configs() if args.quick else full_configs()
    max_seconds = args.max_seconds or (0.8 if args.quick else None)

    registry = AvatarRegistry()
    registry.load_directory(ASSETS)
    avatar = registry.get(AVATAR)
    model = load_motion_translator(MOTION_WEIGHTS)

    env = {AVATARS_DIR_ENV: str(ASSETS), "OMP_NUM_THREADS": str(args.threads)}
    started = time.perf_counter()
    with ServiceProcess(
        "trillium-avatar", ["--drain-seconds", "0", "--grace-seconds", "1"], env=env
    ) as server:
        wait_until_serving(server.target, SERVICE_NAME, timeout=120)
        start_seconds = time.perf_counter() - started
        warm_requests, _ = chunk_requests(speech_at(16_000, 0.4), 16_000, 40)
        cold = run_stream(server.target, StreamConfig("warm-up", 64, 25.0, 40, "burst"), warm_requests, None)
        rows = []
        for config in configs:
            signal = speech_at(config.sample_rate, max_seconds)
            requests, chunks = chunk_requests(signal, config.sample_rate, config.chunk_ms)
            triggers = frame_triggers(model, avatar, chunks, config.sample_rate, config.fps)
            direct = direct_frame_ms(avatar, config.size, 5 if args.quick else 10)  # same load as the run
            runs = run_config(server.target, config, requests)
            rows.append(summarise(config, runs, triggers, direct))
            print_row(rows[-1])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot(rows, args.out_dir / "avatar-latency.png")
    for row in rows:
        del row["_latencies"]
    latency = {
        "configs": rows,
        "cold_first_frame_ms": round(1000 * (cold.frames[0][2] - cold.send_times[0]), 2)
        if cold.frames
        else None,
        "server_start_seconds": round(start_seconds, 2),
        "audio_seconds": round(speech_at(16_000, max_seconds).shape[0] / 16_000, 3),
    }
    meta = {
        "benchmark": "avatar-latency",
        "machine": platform.platform(),
        "threads": args.threads,
        "quick": args.quick,
        "avatar": AVATAR,
        "encoding": "JPEG q90",
        "note": "loopback gRPC, server in a child process; figures depend on other load on the machine",
    }
    merge_results(args.out_dir, {"latency": latency}, "latency", meta)
    return latency


def print_row(row: dict) -> None:
    frame, lag = row["frame_latency_ms"], row["av_lag_ms"]
    print(
        f"{row['name']:<36} first {row['first_frame_ms_mean']} ms (floor {row['first_frame_floor_ms']}) | "
        f"frame p50/p90/p99 {frame.get('p50')}/{frame.get('p90')}/{frame.get('p99')} ms "
        f"(x{row['overhead_ratio']} direct) | lag p50 {lag.get('p50')} ms | {row['delivered_fps']} fps | "
        f"{row['frames_received']}/{row['frames_expected']} frames, {row['frames_dropped']} dropped"
        + (f" | errors {row['errors']}" if row["errors"] else "")
    )


if __name__ == "__main__":
    main()
