"""``Segment`` messages from text and media files (PNG/JPEG images, a video as frames, WAV audio)."""

from __future__ import annotations

import wave
from pathlib import Path

from trillium.common.v1 import media_pb2
from trillium.inference.v1 import inference_pb2

__all__ = ["audio_file", "image_file", "text", "video_path"]

_IMAGE_ENCODINGS = {
    ".png": media_pb2.IMAGE_ENCODING_PNG,
    ".jpg": media_pb2.IMAGE_ENCODING_JPEG,
    ".jpeg": media_pb2.IMAGE_ENCODING_JPEG,
}


def text(content: str) -> inference_pb2.Segment:
    return inference_pb2.Segment(text=content)


def _image(path: Path) -> media_pb2.Image:
    encoding = _IMAGE_ENCODINGS.get(path.suffix.lower())
    if encoding is None:
        raise ValueError(f"{path}: images must be .png, .jpg or .jpeg")
    return media_pb2.Image(encoding=encoding, data=path.read_bytes())


def image_file(path: str | Path) -> inference_pb2.Segment:
    return inference_pb2.Segment(image=_image(Path(path)))


def video_path(path: str | Path) -> inference_pb2.Segment:
    """A folder of frames (sorted by name), or a video file decoded with PyAV."""
    path = Path(path)
    if path.is_dir():
        frames = [_image(p) for p in sorted(path.iterdir()) if p.suffix.lower() in _IMAGE_ENCODINGS]
        if not frames:
            raise ValueError(f"{path}: no .png or .jpg frames in this folder")
        return inference_pb2.Segment(video=inference_pb2.Video(frames=frames))
    import av  # a video file: decode its frames to raw RGB

    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            rgb = frame.to_ndarray(format="rgb24")
            frames.append(
                media_pb2.Image(
                    encoding=media_pb2.IMAGE_ENCODING_RAW_RGB8,
                    data=rgb.tobytes(),
                    width=rgb.shape[1],
                    height=rgb.shape[0],
                )
            )
    return inference_pb2.Segment(video=inference_pb2.Video(frames=frames))


def audio_file(path: str | Path) -> inference_pb2.Segment:
    """A 16-bit PCM WAV file, sent as is (the server resamples)."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV files are supported")
        audio = media_pb2.Audio(
            encoding=media_pb2.AUDIO_ENCODING_PCM_S16LE,
            data=wav.readframes(wav.getnframes()),
            sample_rate_hz=wav.getframerate(),
            channels=wav.getnchannels(),
        )
    return inference_pb2.Segment(audio=audio)
