"""The Animate stream: AnimateConfig, then motion frames or PCM audio, frames out at the requested fps.

Audio (any rate in [8, 96] kHz, fixed for the stream) is resampled to the model's 16 kHz by a
:class:`StreamingResampler` (windowed sinc, filter state kept across chunks) and goes through the
audio-to-motion model (``StreamingMotion``, 25 motion frames per second); its mouth coefficients
drive the matching expression names and its jaw channel the jaw joint (when the avatar takes it, see
``LoadedAvatar.jaw_from_audio``). Frames of both inputs are resampled to ``fps`` by :class:`FrameClock`.

Back-pressure (``streaming.py``): frames waiting to be rendered and rendered frames waiting to be
sent are both bounded (``max_pending_frames``, ``max_queued_frames``); a full pending stage stops
the reader. Real-time pacing (the default) also skips frames more than ``max_render_lag_seconds``
late (oldest first, never the newest) and drops the oldest rendered frames a slow client has not
taken; offline pacing renders and sends every frame, waiting instead.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trillium.avatar.service.encoding import ENCODING_LABELS, H264Encoder, encode_image
from trillium.avatar.service.metrics import AvatarMetrics
from trillium.avatar.service.registry import AvatarRegistry
from trillium.avatar.service.resample import StreamingResampler
from trillium.avatar.service.scene import (
    Camera,
    LoadedAvatar,
    Motion,
    cpu_backend,
    record_gpu_memory,
    render_rgb,
)
from trillium.avatar.service.streaming import (
    DropOldestQueue,
    FrameClock,
    FrameSpan,
    RenderedFrame,
    RenderWorker,
)
from trillium.avatar.service.validation import audio_format, finite, motion_params, render_settings
from trillium.avatar.v1 import avatar_pb2
from trillium.common.v1 import media_pb2
from trillium.servicekit.errors import FailedPreconditionError, ServiceError, ValidationError

MAX_FPS = 60.0
DEFAULT_QUEUE = 8
MAX_QUEUE = 256
MIN_DEFAULT_PENDING = 4
DEFAULT_PENDING_SECONDS = 0.5
MAX_PENDING = 1024
DEFAULT_RENDER_LAG = 0.25
MAX_RENDER_LAG = 60.0
MAX_STREAM_SECONDS = 24 * 3600.0  # timestamps beyond a day are absurd (and would mean billions of frames)
PACINGS = {
    avatar_pb2.PACING_UNSPECIFIED: "realtime",
    avatar_pb2.PACING_REALTIME: "realtime",
    avatar_pb2.PACING_OFFLINE: "offline",
}
MODEL_SAMPLE_RATE = 16_000
MOTION_FPS = 25.0


@dataclass(frozen=True)
class AnimateSettings:
    """A validated AnimateConfig."""

    avatar: LoadedAvatar
    camera: Camera
    encoding: int
    jpeg_quality: int
    fps: float
    max_queued_frames: int
    speaker_id: int
    renderer: str
    max_pending_frames: int = MIN_DEFAULT_PENDING
    pacing: str = "realtime"
    max_render_lag: float = DEFAULT_RENDER_LAG

    @property
    def realtime(self) -> bool:
        return self.pacing == "realtime"

    @classmethod
    def from_config(cls, config: avatar_pb2.AnimateConfig, registry: AvatarRegistry) -> AnimateSettings:
        avatar = registry.get(config.avatar_id, field="config.avatar_id")
        camera, encoding, quality = render_settings(config.settings, "config.settings", stream=True)
        fps = finite("config.fps", config.fps)
        if not 0.0 < fps <= MAX_FPS:
            raise ValidationError("config.fps", f"must be in (0, {MAX_FPS:g}], got {fps:g}")
        queued = config.max_queued_frames or DEFAULT_QUEUE
        if not 1 <= queued <= MAX_QUEUE:
            raise ValidationError("config.max_queued_frames", f"must be in [1, {MAX_QUEUE}] (0 = default)")
        speaker = config.speaker_id or "0"
        if not speaker.isdigit():
            raise ValidationError("config.speaker_id", f"must be a speaker index, got {speaker!r}")
        pending = config.max_pending_frames or default_pending_frames(fps)
        if not 1 <= pending <= MAX_PENDING:
            raise ValidationError(
                "config.max_pending_frames", f"must be in [1, {MAX_PENDING}] (0 = default), got {pending}"
            )
        if config.pacing not in PACINGS:
            raise ValidationError("config.pacing", f"unknown pacing {config.pacing}")
        lag = finite("config.max_render_lag_seconds", config.max_render_lag_seconds) or DEFAULT_RENDER_LAG
        if not 0.0 < lag <= MAX_RENDER_LAG:
            raise ValidationError(
                "config.max_render_lag_seconds",
                f"must be in (0, {MAX_RENDER_LAG:g}] (0 = default), got {lag:g}",
            )
        gsplat = config.settings.renderer == avatar_pb2.RENDERER_GSPLAT
        return cls(
            avatar, camera, encoding, quality, fps, queued, int(speaker), "gsplat" if gsplat else "cpu",
            pending, PACINGS[config.pacing], lag,
        )  # fmt: skip


def default_pending_frames(fps: float) -> int:
    """Half a second of frames, at least 4: ``max(4, ceil(fps / 2))``."""
    return max(MIN_DEFAULT_PENDING, math.ceil(fps * DEFAULT_PENDING_SECONDS))


def stream_time(field: str, value: float) -> float:
    """A finite, non-negative timestamp of at most a day."""
    seconds = finite(field, value)
    if not 0.0 <= seconds <= MAX_STREAM_SECONDS:
        raise ValidationError(field, f"must be in [0, {MAX_STREAM_SECONDS:g}] s, got {seconds:g}")
    return seconds


class MotionModel:
    """The audio-to-motion model, loaded on first use; FAILED_PRECONDITION when not installed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._model = None
        self._lock = threading.Lock()

    def get(self):
        with self._lock:
            if self._model is None:
                if not self.path.is_file():
                    raise FailedPreconditionError("no audio-to-motion model installed", field="audio")
                from trillium.avatar.core import load_motion_translator

                self._model = load_motion_translator(self.path)
            return self._model


def decode_pcm(audio: media_pb2.Audio) -> tuple[np.ndarray, int]:
    """(mono float32 samples in [-1, 1] [n], sample rate in Hz) of a PCM chunk."""
    rate, channels = audio_format("audio.audio", audio.sample_rate_hz, audio.channels)
    if audio.encoding == media_pb2.AUDIO_ENCODING_PCM_S16LE:
        samples = (
            np.frombuffer(audio.data, dtype="<i2", count=len(audio.data) // 2).astype(np.float32) / 32768
        )
        width = 2
    elif audio.encoding == media_pb2.AUDIO_ENCODING_PCM_F32LE:
        samples = np.frombuffer(audio.data, dtype="<f4", count=len(audio.data) // 4).astype(np.float32)
        width = 4
    else:
        raise ValidationError("audio.audio.encoding", "must be PCM_S16LE or PCM_F32LE")
    if len(audio.data) % (width * channels):
        raise ValidationError("audio.audio.data", f"length is not a multiple of {width * channels} bytes")
    if not np.isfinite(samples).all():
        raise ValidationError("audio.audio.data", "samples must be finite")
    return samples.reshape(-1, channels).mean(axis=1), rate


class AudioMotion:
    """PCM chunks at ``sample_rate`` -> timestamped motion keyframes at 25 fps for one avatar."""

    def __init__(
        self, model, avatar: LoadedAvatar, speaker_id: int, start: float, sample_rate: int = MODEL_SAMPLE_RATE
    ) -> None:
        from trillium.avatar.core import StreamingMotion
        from trillium.avatar.core.visemes import MOTION_CHANNELS

        try:
            self.stream = StreamingMotion(model, speaker_id)
        except ValueError as error:
            raise ValidationError("config.speaker_id", str(error)) from error
        names = avatar.expression_names
        self.columns = [(names.index(c), i) for i, c in enumerate(MOTION_CHANNELS[:-1]) if c in names]
        self.avatar, self.start, self.emitted = avatar, start, 0
        self.sample_rate = sample_rate
        self.resampler = StreamingResampler(sample_rate, MODEL_SAMPLE_RATE)

    def push(self, samples: np.ndarray) -> list[tuple[float, Motion]]:
        """Mono samples [n] at ``sample_rate`` -> the keyframes they complete."""
        return self._keyframes(self.stream.push(self.resampler.push(samples)).numpy())

    def flush(self) -> list[tuple[float, Motion]]:
        """End of audio: the remaining keyframes (resampler tail, then the model's look-ahead)."""
        tail = self.stream.push(self.resampler.flush())
        return self._keyframes(np.concatenate([tail.numpy(), self.stream.flush().numpy()]))

    def _keyframes(self, rows: np.ndarray) -> list[tuple[float, Motion]]:
        keyframes = []
        for row in rows:
            coefficients = np.zeros(len(self.avatar.expression_names), dtype=np.float32)
            for target, source in self.columns:
                coefficients[target] = row[source]
            jaw = np.array([row[-1] if self.avatar.jaw_from_audio else 0.0, 0.0, 0.0], dtype=np.float32)
            zeros = np.zeros(3, dtype=np.float32)
            keyframes.append(
                (self.start + self.emitted / MOTION_FPS, Motion(coefficients, zeros, zeros, jaw))
            )
            self.emitted += 1
        return keyframes


class AnimateSession:
    """One Animate stream: a reader task, a render worker thread and the sending generator."""

    def __init__(
        self,
        settings: AnimateSettings,
        metrics: AvatarMetrics,
        motion_model: MotionModel,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.metrics, self.motion_model = settings, metrics, motion_model
        self.now = now  # the wall clock that frame deadlines follow (real-time pacing)
        self.clock = FrameClock(settings.fps)
        self.audio: AudioMotion | None = None
        self.mode = ""
        self.last_timestamp = -np.inf
        self.error: BaseException | None = None

    def _render(self, motion: Motion) -> np.ndarray:
        s = self.settings
        backend = "gsplat" if s.renderer == "gsplat" else cpu_backend()
        start = time.perf_counter()
        rgb = render_rgb(s.avatar, motion, s.camera, backend)
        self.metrics.frame_render_seconds.labels(s.renderer).observe(time.perf_counter() - start)
        self.metrics.frames_rendered.inc()
        record_gpu_memory(self.metrics, s.renderer)
        return rgb

    async def run(
        self, requests: AsyncIterator[avatar_pb2.AnimateRequest]
    ) -> AsyncIterator[avatar_pb2.AnimateResponse]:
        opened = time.perf_counter()
        s, loop = self.settings, asyncio.get_running_loop()
        dropped = self.metrics.frames_dropped.labels("backpressure")
        skipped = self.metrics.frames_dropped.labels("render_lag")
        queue = DropOldestQueue(s.max_queued_frames, loop, dropped.inc, drop=s.realtime)
        lag = s.max_render_lag if s.realtime else None
        worker = RenderWorker(
            self._render, queue, loop, s.max_pending_frames, max_lag=lag, on_skip=skipped.inc, now=self.now
        )
        reader = asyncio.create_task(self._read(requests, worker))
        encoder = None
        if self.settings.encoding == avatar_pb2.FRAME_ENCODING_H264:
            encoder = H264Encoder(self.settings.camera.width, self.settings.camera.height, self.settings.fps)
        first_frame, last_index = None, -1
        try:
            while (item := await queue.get()) is not None:
                if self.error is not None:
                    break
                if encoder is not None and item.index != last_index + 1:
                    encoder.force_keyframe = True
                last_index = item.index
                yield avatar_pb2.AnimateResponse(frame=await asyncio.to_thread(self._encode, item, encoder))
                if first_frame is None:
                    first_frame = time.perf_counter() - opened
                    self.metrics.time_to_first_frame.observe(first_frame)
            await reader
            if self.error is not None:
                raise self.error
            if worker.error is not None:
                raise ServiceError(f"rendering failed: {worker.error}") from worker.error
            yield avatar_pb2.AnimateResponse(
                stats=avatar_pb2.StreamStats(
                    frames_rendered=worker.rendered,
                    frames_dropped=queue.dropped + worker.skipped,
                    time_to_first_frame_seconds=first_frame or 0.0,
                    mean_render_seconds=worker.render_seconds / max(worker.rendered, 1),
                    frames_dropped_render_lag=worker.skipped,
                )
            )
        finally:
            reader.cancel()
            worker.finish(discard=True)
            queue.close()  # wakes a renderer waiting for room (offline pacing)

    def _encode(self, item: RenderedFrame, encoder: H264Encoder | None) -> avatar_pb2.Frame:
        s = self.settings
        start = time.perf_counter()
        if encoder is not None:
            data, keyframe = encoder.encode(item.rgb)
        else:
            data, keyframe = encode_image(item.rgb, s.encoding, s.jpeg_quality), True
        seconds = time.perf_counter() - start
        self.metrics.frame_encode_seconds.labels(ENCODING_LABELS[s.encoding]).observe(seconds)
        return avatar_pb2.Frame(
            index=item.index, timestamp_seconds=item.timestamp, encoding=s.encoding, width=s.camera.width,
            height=s.camera.height, data=data, render_seconds=item.render_seconds, encode_seconds=seconds,
            keyframe=keyframe,
        )  # fmt: skip

    async def _read(self, requests: AsyncIterator[avatar_pb2.AnimateRequest], worker: RenderWorker) -> None:
        try:
            async for request in requests:
                kind = request.WhichOneof("input")
                if kind == "end":
                    break
                await self._submit(worker, await self._keyframes(kind, request))
            if self.audio is not None:
                await self._submit(worker, self._advance(self.audio.flush()))
            await self._submit(worker, [self.clock.finish()])
            worker.finish()
        except ServiceError as error:
            self.error = error
            worker.finish(discard=True)
        except asyncio.CancelledError:
            worker.finish(discard=True)
            raise

    async def _submit(self, worker: RenderWorker, spans: list[FrameSpan]) -> None:
        for span in spans:
            await worker.submit(span)

    async def _keyframes(self, kind: str | None, request: avatar_pb2.AnimateRequest) -> list[FrameSpan]:
        if kind not in {"audio", "motion"}:
            raise ValidationError("input", "after the config only audio, motion or end messages may follow")
        if self.mode and kind != self.mode:
            raise ValidationError(
                kind, f"a stream carries audio or motion, not both (this one is {self.mode})"
            )
        self.mode = kind
        if kind == "motion":
            timestamp = stream_time("motion.timestamp_seconds", request.motion.timestamp_seconds)
            if timestamp < self.last_timestamp:
                raise ValidationError("motion.timestamp_seconds", "must be non-negative and non-decreasing")
            self.last_timestamp = timestamp
            motion = motion_params(request.motion.motion, self.settings.avatar, "motion.motion")
            return [self.clock.advance(timestamp, motion)]
        samples, rate = decode_pcm(request.audio.audio)
        if self.audio is None:
            model = await asyncio.to_thread(self.motion_model.get)
            field = "audio.timestamp_seconds"
            start = stream_time(field, max(finite(field, request.audio.timestamp_seconds), 0.0))
            self.audio = AudioMotion(model, self.settings.avatar, self.settings.speaker_id, start, rate)
        elif rate != self.audio.sample_rate:
            raise ValidationError(
                "audio.audio.sample_rate_hz",
                f"changed within the stream from {self.audio.sample_rate} to {rate}",
            )
        return self._advance(await asyncio.to_thread(self.audio.push, samples))

    def _advance(self, keyframes: list[tuple[float, Motion]]) -> list[FrameSpan]:
        return [self.clock.advance(timestamp, motion) for timestamp, motion in keyframes]
