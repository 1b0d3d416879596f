"""Animate over real gRPC: motion and audio input, H.264, back-pressure, concurrency, the demo clip."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import av
import grpc
import numpy as np
import pytest
import torch

from trillium.avatar.service.demo import render_demo_clip
from trillium.avatar.service.streaming import DropOldestQueue
from trillium.avatar.v1 import avatar_pb2
from trillium.common.v1 import media_pb2

AVATAR = "procedural-head"
ASSETS = Path(__file__).resolve().parents[3] / "assets" / "avatars"
HAS_AUDIO_MODEL = (ASSETS / "motion-translator" / "motion_translator.safetensors").is_file()


def config(
    encoding=avatar_pb2.FRAME_ENCODING_RAW_RGB8,
    fps=10.0,
    size=32,
    queued=0,
    pacing=avatar_pb2.PACING_OFFLINE,  # these clients send faster than real time and want every frame
    **kw,
):
    settings = avatar_pb2.RenderSettings(width=size, height=size, encoding=encoding)
    return avatar_pb2.AnimateRequest(
        config=avatar_pb2.AnimateConfig(
            avatar_id=AVATAR, settings=settings, fps=fps, max_queued_frames=queued, pacing=pacing, **kw
        )
    )


def motion(t: float, jaw: float) -> avatar_pb2.AnimateRequest:
    params = avatar_pb2.MotionParams(expression={"jawOpen": jaw})
    return avatar_pb2.AnimateRequest(motion=avatar_pb2.MotionFrame(motion=params, timestamp_seconds=t))


def end() -> avatar_pb2.AnimateRequest:
    return avatar_pb2.AnimateRequest(end=avatar_pb2.EndOfStream())


def collect(stub, requests) -> tuple[list[avatar_pb2.Frame], avatar_pb2.StreamStats | None]:
    frames, stats = [], None
    for response in stub.Animate(iter(requests), timeout=60):
        if response.WhichOneof("event") == "frame":
            frames.append(response.frame)
        else:
            stats = response.stats
    return frames, stats


def rgb(frame: avatar_pb2.Frame) -> np.ndarray:
    return np.frombuffer(frame.data, np.uint8).reshape(frame.height, frame.width, 3)


def test_motion_frames_give_frames_on_the_fps_grid(stub, metric):
    # keyframes every 0.25 s for 1 s; at 8 fps that is 9 frames at i / 8 s
    keyframes = [motion(t, jaw) for t, jaw in [(0.0, 0.0), (0.25, 1.0), (0.5, 0.0), (0.75, 1.0), (1.0, 0.0)]]
    before = metric("avatar_frames_rendered_total")
    frames, stats = collect(stub, [config(fps=8.0), *keyframes, end()])
    assert [f.index for f in frames] == list(range(9))
    assert np.allclose([f.timestamp_seconds for f in frames], np.arange(9) / 8)
    assert stats.frames_rendered == 9 and stats.frames_dropped == 0
    assert stats.time_to_first_frame_seconds > 0
    assert metric("avatar_frames_rendered_total") - before == 9
    # frame at 0.25 s uses the jawOpen=1 keyframe, frame at 0.125 s the closed one
    assert np.abs(rgb(frames[2]).astype(int) - rgb(frames[1])).mean() > 0.5
    assert np.array_equal(rgb(frames[0]), rgb(frames[1]))
    assert metric("avatar_active_streams") == 0


def test_h264_stream_decodes_with_pyav(stub):
    keyframes = [motion(i / 10, (i % 4) / 3) for i in range(12)]
    frames, _ = collect(stub, [config(avatar_pb2.FRAME_ENCODING_H264, fps=10.0, size=48), *keyframes, end()])
    assert len(frames) == 12
    assert frames[0].keyframe and frames[0].data.startswith(b"\x00\x00\x00\x01")
    codec = av.CodecContext.create("h264", "r")
    decoded = []
    for frame in frames:  # each Frame carries one complete access unit
        decoded += codec.decode(av.Packet(frame.data))
    decoded += codec.decode(None)
    assert len(decoded) == 12
    assert (decoded[0].width, decoded[0].height) == (48, 48)


def test_slow_reader_drops_oldest_frames_with_bounded_queue(stub, service, metric):
    dropped_before = metric("avatar_frames_dropped_total", reason="backpressure")
    keyframes = [motion(i / 30, 0.5) for i in range(60)]
    received, stats = [], None
    realtime = config(
        fps=30.0, size=128, queued=2, pacing=avatar_pb2.PACING_REALTIME, max_render_lag_seconds=60.0
    )  # a generous render lag: only the slow reader drops frames here
    responses = stub.Animate(iter([realtime, *keyframes, end()]), timeout=120)
    for response in responses:
        if response.WhichOneof("event") == "stats":
            stats = response.stats
            continue
        received.append(response.frame.index)
        time.sleep(0.05)
    assert stats is not None and stats.frames_rendered == 60 and stats.frames_dropped_render_lag == 0
    assert stats.frames_dropped > 0
    assert len(received) == stats.frames_rendered - stats.frames_dropped
    assert received == sorted(received) and received[-1] == 59  # oldest dropped, newest kept
    assert (
        metric("avatar_frames_dropped_total", reason="backpressure") - dropped_before == stats.frames_dropped
    )


def test_offline_pacing_sends_every_frame_through_tiny_bounds(stub, metric):
    dropped_before = [metric("avatar_frames_dropped_total", reason=r) for r in ("backpressure", "render_lag")]
    offline = config(fps=30.0, size=64, queued=1, max_pending_frames=1)
    responses = stub.Animate(iter([offline, motion(0.0, 0.0), motion(2.0, 1.0), end()]), timeout=120)
    frames, stats = [], None
    for response in responses:
        if response.WhichOneof("event") == "stats":
            stats = response.stats
            continue
        frames.append(response.frame)
        time.sleep(0.005)  # a slow reader: the renderer and then the reader of input wait
    assert [f.index for f in frames] == list(range(61))  # 2 s at 30 fps, both ends included
    assert np.allclose([f.timestamp_seconds for f in frames], np.arange(61) / 30)
    assert stats.frames_rendered == 61 and stats.frames_dropped == 0
    after = [metric("avatar_frames_dropped_total", reason=r) for r in ("backpressure", "render_lag")]
    assert after == dropped_before


def test_realtime_stream_accounts_for_every_frame(stub, metric):
    # whether this machine renders 64 px frames in real time is not asserted; the accounting is
    before = {r: metric("avatar_frames_dropped_total", reason=r) for r in ("backpressure", "render_lag")}
    realtime = config(fps=60.0, size=64, pacing=avatar_pb2.PACING_REALTIME, max_pending_frames=2)
    frames, stats = collect(stub, [realtime, motion(0.0, 0.0), motion(1.0, 1.0), end()])
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices)) and indices[-1] == 60  # the newest frame always arrives
    assert np.allclose([f.timestamp_seconds for f in frames], np.array(indices) / 60)
    assert len(frames) + stats.frames_dropped == 61
    assert stats.frames_rendered + stats.frames_dropped_render_lag == 61
    lag = metric("avatar_frames_dropped_total", reason="render_lag") - before["render_lag"]
    backpressure = metric("avatar_frames_dropped_total", reason="backpressure") - before["backpressure"]
    assert lag == stats.frames_dropped_render_lag
    assert backpressure == stats.frames_dropped - stats.frames_dropped_render_lag


def test_three_concurrent_streams(stub):
    results: dict[int, tuple] = {}

    def run(jaw_amplitude: int) -> None:
        keyframes = [motion(i / 10, jaw_amplitude * (i % 2) / 2) for i in range(8)]
        results[jaw_amplitude] = collect(stub, [config(fps=10.0), *keyframes, end()])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [0, 1, 2]
    for frames, stats in results.values():
        assert [f.index for f in frames] == list(range(8)) and stats.frames_rendered == 8
    still, moving = results[0][0], results[2][0]
    assert np.array_equal(rgb(still[0]), rgb(still[1]))
    assert not np.array_equal(rgb(moving[0]), rgb(moving[1]))


NAN = float("nan")


@pytest.mark.parametrize(
    ("requests", "code", "field"),
    [
        ([motion(0.0, 0.1)], grpc.StatusCode.INVALID_ARGUMENT, "config"),
        ([], grpc.StatusCode.INVALID_ARGUMENT, "config"),
        ([config(fps=0.0)], grpc.StatusCode.INVALID_ARGUMENT, "config.fps"),
        ([config(fps=61.0)], grpc.StatusCode.INVALID_ARGUMENT, "config.fps"),
        ([config(fps=NAN)], grpc.StatusCode.INVALID_ARGUMENT, "config.fps"),
        ([config(size=4000)], grpc.StatusCode.INVALID_ARGUMENT, "config.settings.width"),
        ([config(encoding=9)], grpc.StatusCode.INVALID_ARGUMENT, "config.settings.encoding"),
        ([config(queued=-1)], grpc.StatusCode.INVALID_ARGUMENT, "config.max_queued_frames"),
        ([config(max_pending_frames=-1)], grpc.StatusCode.INVALID_ARGUMENT, "config.max_pending_frames"),
        ([config(max_pending_frames=5000)], grpc.StatusCode.INVALID_ARGUMENT, "config.max_pending_frames"),
        ([config(pacing=7)], grpc.StatusCode.INVALID_ARGUMENT, "config.pacing"),
        (
            [config(max_render_lag_seconds=NAN)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "config.max_render_lag_seconds",
        ),
        (
            [config(max_render_lag_seconds=-1.0)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "config.max_render_lag_seconds",
        ),
        (
            [config(), motion(0.0, 0.1), motion(1e12, 0.1)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "motion.timestamp_seconds",
        ),
        (
            [config(), motion(0.0, NAN)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "motion.motion.expression['jawOpen']",
        ),
        (
            [config(), motion(0.5, 0.1), motion(0.2, 0.1)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "motion.timestamp_seconds",
        ),
        ([config(), config()], grpc.StatusCode.INVALID_ARGUMENT, "input"),
    ],
)
def test_animate_rejects_bad_input(stub, requests, code, field):
    with pytest.raises(grpc.RpcError) as info:
        collect(stub, requests)
    assert info.value.code() == code, info.value.details()
    assert info.value.details().startswith(field), info.value.details()


def test_animate_unknown_avatar(stub):
    request = config()
    request.config.avatar_id = "nobody"
    with pytest.raises(grpc.RpcError) as info:
        collect(stub, [request])
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details().startswith("config.avatar_id")


def audio(
    samples: np.ndarray, rate: int = 16_000, t: float = 0.0, channels: int = 1, f32: bool = False
) -> avatar_pb2.AnimateRequest:
    if f32:
        pcm, encoding = samples.astype("<f4").tobytes(), media_pb2.AUDIO_ENCODING_PCM_F32LE
    else:
        pcm, encoding = (samples * 32767).astype("<i2").tobytes(), media_pb2.AUDIO_ENCODING_PCM_S16LE
    chunk = media_pb2.Audio(encoding=encoding, data=pcm, sample_rate_hz=rate, channels=channels)
    return avatar_pb2.AnimateRequest(audio=avatar_pb2.AudioChunk(audio=chunk, timestamp_seconds=t))


@pytest.mark.parametrize(
    ("chunks", "field"),
    [
        ([audio(np.zeros(1600), 0)], "audio.audio.sample_rate_hz"),
        ([audio(np.zeros(1600), 100)], "audio.audio.sample_rate_hz"),
        ([audio(np.zeros(1600), 4_000)], "audio.audio.sample_rate_hz"),
        ([audio(np.zeros(1600), 1_000_000)], "audio.audio.sample_rate_hz"),
        ([audio(np.zeros(1600), -16_000)], "audio.audio.sample_rate_hz"),
        ([audio(np.zeros(1600), channels=64)], "audio.audio.channels"),
        ([audio(np.zeros(1600), 44_100), audio(np.zeros(1600), 48_000)], "audio.audio.sample_rate_hz"),
    ],
)
def test_audio_with_absurd_or_changing_format_is_rejected(stub, chunks, field):
    with pytest.raises(grpc.RpcError) as info:
        collect(stub, [config(), *chunks, end()])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field), info.value.details()
    frames, _ = collect(stub, [config(), motion(0.0, 0.0), end()])  # the server still serves
    assert len(frames) == 1


@pytest.mark.skipif(not HAS_AUDIO_MODEL, reason="no audio-to-motion model installed")
def test_audio_drives_frames(stub):
    t = np.arange(16_000) / 16_000
    speechlike = 0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    chunks = [audio(speechlike[i : i + 3200], t=i / 16_000) for i in range(0, 16_000, 3200)]
    frames, stats = collect(stub, [config(fps=10.0), *chunks, end()])
    assert stats.frames_rendered == len(frames) >= 9  # one second of audio at 10 fps
    assert np.allclose([f.timestamp_seconds for f in frames], np.arange(len(frames)) / 10)


@pytest.mark.skipif(not HAS_AUDIO_MODEL, reason="no audio-to-motion model installed")
@pytest.mark.parametrize("rate", [8_000, 44_100, 48_000])
def test_audio_at_other_rates_is_resampled_to_the_same_motion(stub, rate):
    from trillium.avatar.core.audio import resample
    from trillium.avatar.core.speech_data import read_wav

    pcm, speech_rate = read_wav(ASSETS / "speech" / "hello.wav")
    speech = pcm[: speech_rate * 6 // 5].astype(np.float32) / 32768  # 1.2 s of the shipped sample
    other = resample(torch.from_numpy(speech), speech_rate, rate).numpy()
    chunk = rate // 25  # 40 ms

    def frames_of(signal: np.ndarray, signal_rate: int, step: int) -> list[np.ndarray]:
        chunks = [
            audio(signal[i : i + step], signal_rate, t=i / signal_rate, f32=True)
            for i in range(0, signal.shape[0], step)
        ]
        frames, stats = collect(stub, [config(fps=25.0, size=64), *chunks, end()])
        assert stats.frames_dropped == 0
        return [rgb(f).astype(np.int16) for f in frames]

    reference = frames_of(speech, speech_rate, speech_rate // 25)
    resampled = frames_of(other, rate, chunk)
    assert len(resampled) == len(reference) == 30  # 1.2 s at 25 fps
    moving = np.mean([np.abs(a - b).mean() for a, b in zip(reference[1:], reference[:-1], strict=True)])
    change = np.mean([np.abs(a - b).mean() for a, b in zip(resampled[1:], resampled[:-1], strict=True)])
    assert moving > 0.2 and change > 0.2  # the mouth moves in both
    if rate != 8_000:  # 8 kHz audio has no 4-8 kHz band, which the model also hears
        difference = np.mean([np.abs(a - b).mean() for a, b in zip(resampled, reference, strict=True)])
        assert difference < 0.2 * moving, (difference, moving)


@pytest.mark.skipif(not HAS_AUDIO_MODEL, reason="no audio-to-motion model installed")
def test_streamed_audio_motion_at_44k_equals_the_offline_prediction():
    from trillium.avatar.core import load_motion_translator
    from trillium.avatar.core.audio import resample
    from trillium.avatar.core.speech_data import read_wav
    from trillium.avatar.core.visemes import MOTION_CHANNELS
    from trillium.avatar.service.animate import AudioMotion
    from trillium.avatar.service.registry import AvatarRegistry

    registry = AvatarRegistry()
    registry.load_directory(ASSETS)
    avatar = registry.get(AVATAR)
    model = load_motion_translator(ASSETS / "motion-translator" / "motion_translator.safetensors")
    pcm, rate = read_wav(ASSETS / "speech" / "hello.wav")
    speech = resample(torch.from_numpy(pcm[: rate * 2].astype(np.float32) / 32768), rate, 44_100).numpy()
    offline = model.predict(speech, 44_100, speaker_id=0).numpy()  # resamples the whole clip at once
    stream = AudioMotion(model, avatar, 0, 0.0, sample_rate=44_100)
    keyframes = []
    for start in range(0, speech.shape[0], 882):  # 20 ms chunks
        keyframes += stream.push(speech[start : start + 882])
    keyframes += stream.flush()
    assert len(keyframes) == offline.shape[0] == 50
    assert np.allclose([t for t, _ in keyframes], np.arange(50) / 25)
    jaw_open = avatar.expression_names.index("jawOpen")
    streamed = np.array([m.coefficients[jaw_open] for _, m in keyframes])
    np.testing.assert_allclose(streamed, offline[:, MOTION_CHANNELS.index("jawOpen")], atol=1e-5)
    assert streamed.std() > 0.02


def test_demo_clip_writes_a_valid_mp4(service, tmp_path):
    video, sheet = render_demo_clip(tmp_path, size=64, fps=10.0, max_seconds=0.6, target=service.target)
    assert video.name == "avatar.mp4" and sheet.name == "avatar-contact-sheet.png"
    with av.open(str(video)) as container:
        decoded = list(container.decode(video=0))
    assert len(decoded) >= 5 and (decoded[0].width, decoded[0].height) == (64, 64)
    assert sheet.stat().st_size > 0


def test_drop_oldest_queue_never_exceeds_its_bound():
    async def scenario() -> tuple[list, int, int, int]:
        drops = []
        queue = DropOldestQueue(3, asyncio.get_running_loop(), lambda: drops.append(1))
        for item in range(100):
            queue.put(item)
        queue.close()
        items = []
        while (item := await queue.get()) is not None:
            items.append(item)
        return items, queue.peak, queue.dropped, len(drops)

    items, peak, dropped, counted = asyncio.run(scenario())
    assert items == [97, 98, 99] and peak == 3 and dropped == counted == 97


def test_cancelled_stream_releases_its_slot(stub, metric):
    keyframes = [motion(i / 30, 0.5) for i in range(300)]
    responses = stub.Animate(iter([config(fps=30.0, size=64), *keyframes]), timeout=60)
    assert next(responses).WhichOneof("event") == "frame"
    assert metric("avatar_active_streams") == 1
    responses.cancel()
    for _ in range(100):
        if metric("avatar_active_streams") == 0:
            break
        time.sleep(0.05)
    assert metric("avatar_active_streams") == 0
    frames, stats = collect(stub, [config(), motion(0.0, 0.0), end()])  # the server still serves
    assert len(frames) == 1 and stats.frames_rendered == 1


def test_missing_audio_model_is_a_failed_precondition(tmp_path):
    from trillium.avatar.service.animate import MotionModel
    from trillium.servicekit.errors import FailedPreconditionError

    with pytest.raises(FailedPreconditionError, match="no audio-to-motion model installed"):
        MotionModel(tmp_path / "absent.safetensors").get()
