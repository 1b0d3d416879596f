"""A ``GenerateRequest``'s segments as the prompt of an av-tiny-style model (a folder with a processor).

The av-tiny processor builds one fixed prompt shape: a text passage, one video, one audio track and a
question (see ``trillium.models.av_tiny.processor``). Segments map onto it in order:

* text segments before any media form the passage (joined with a space);
* ``image`` segments are one-frame videos; ``video.frames`` and images are concatenated, in order,
  into one video (all frames the same size);
* one ``audio`` segment: PCM with its own sample rate, resampled by the processor;
* the last segment must be text: the question. Text between media segments is refused (this model
  has nowhere to put it).

Every error is a ``ValidationError`` naming the segment field at fault (INVALID_ARGUMENT).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, UnidentifiedImageError

from trillium.common.v1 import media_pb2
from trillium.inference.v1 import inference_pb2
from trillium.models.av_tiny import AVInputs, AVTinyProcessor
from trillium.models.av_tiny.processor import MAX_GRID
from trillium.servicekit.errors import ValidationError

MIN_SAMPLE_RATE_HZ = 1000
MAX_SAMPLE_RATE_HZ = 192_000
MAX_IMAGE_SIDE = 4096
MAX_CHANNELS = 8


@dataclass
class PromptParts:
    """The processor's arguments gathered from the segments."""

    passage: list[str] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)
    frame_fields: list[str] = field(default_factory=list)
    audio: np.ndarray | None = None
    sample_rate: int | None = None
    audio_field: str = ""
    question: str = ""


def decode_image(image: media_pb2.Image, where: str) -> np.ndarray:
    """RGB ``uint8 [H, W, 3]`` from a wire ``Image`` (raw RGB8, PNG or JPEG)."""
    if not image.data:
        raise ValidationError(f"{where}.data", "is empty")
    if image.encoding == media_pb2.IMAGE_ENCODING_RAW_RGB8:
        if image.width < 1 or image.height < 1:
            raise ValidationError(f"{where}.width", "width and height are required for RAW_RGB8")
        if max(image.width, image.height) > MAX_IMAGE_SIDE:
            raise ValidationError(f"{where}.width", f"sides must be at most {MAX_IMAGE_SIDE} pixels")
        expected = image.width * image.height * 3
        if len(image.data) != expected:
            raise ValidationError(
                f"{where}.data",
                f"RAW_RGB8 {image.width}x{image.height} needs {expected} bytes, got {len(image.data)}",
            )
        return np.frombuffer(image.data, dtype=np.uint8).reshape(image.height, image.width, 3).copy()
    if image.encoding not in (media_pb2.IMAGE_ENCODING_PNG, media_pb2.IMAGE_ENCODING_JPEG):
        raise ValidationError(f"{where}.encoding", "must be RAW_RGB8, PNG or JPEG")
    try:
        with Image.open(io.BytesIO(image.data)) as opened:
            if max(opened.size) > MAX_IMAGE_SIDE:
                raise ValidationError(f"{where}.data", f"sides must be at most {MAX_IMAGE_SIDE} pixels")
            array = np.asarray(opened.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError(f"{where}.data", f"cannot be decoded as an image: {exc}") from None
    return array


def decode_audio(audio: media_pb2.Audio, where: str) -> tuple[np.ndarray, int]:
    """Mono-or-interleaved PCM ``[N]`` / ``[N, C]`` (int16 or float32) and its sample rate."""
    if not MIN_SAMPLE_RATE_HZ <= audio.sample_rate_hz <= MAX_SAMPLE_RATE_HZ:
        raise ValidationError(
            f"{where}.sample_rate_hz",
            f"must be in [{MIN_SAMPLE_RATE_HZ}, {MAX_SAMPLE_RATE_HZ}] Hz, got {audio.sample_rate_hz}",
        )
    channels = audio.channels or 1
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValidationError(f"{where}.channels", f"must be in [1, {MAX_CHANNELS}], got {audio.channels}")
    dtypes = {media_pb2.AUDIO_ENCODING_PCM_S16LE: "<i2", media_pb2.AUDIO_ENCODING_PCM_F32LE: "<f4"}
    if audio.encoding not in dtypes:
        raise ValidationError(f"{where}.encoding", "must be PCM_S16LE or PCM_F32LE")
    dtype = np.dtype(dtypes[audio.encoding])
    frame_bytes = dtype.itemsize * channels
    if not audio.data or len(audio.data) % frame_bytes:
        raise ValidationError(
            f"{where}.data", f"must be a non-empty whole number of {frame_bytes}-byte sample frames"
        )
    samples = np.frombuffer(audio.data, dtype=dtype).astype(dtype.newbyteorder("="))
    if dtype.kind == "f" and not np.isfinite(samples).all():
        raise ValidationError(f"{where}.data", "float PCM must be finite")
    return (samples if channels == 1 else samples.reshape(-1, channels)), int(audio.sample_rate_hz)


def gather_parts(segments: list[inference_pb2.Segment]) -> PromptParts:
    """Sort the segments into passage, frames, audio and question (rules in the module docstring)."""
    if not segments:
        raise ValidationError("segments", "must hold at least the question (a text segment)")
    parts = PromptParts()
    media_seen = False
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        where = f"segments[{index}]"
        kind = segment.WhichOneof("content")
        if kind is None:
            raise ValidationError(where, "is empty: set text, image, video or audio")
        if kind == "text":
            if index == last:
                parts.question = segment.text
            elif media_seen:
                raise ValidationError(
                    f"{where}.text",
                    "text between media is not supported: put the passage first, the question last",
                )
            else:
                parts.passage.append(segment.text)
        elif kind == "image":
            parts.frames.append(decode_image(segment.image, f"{where}.image"))
            parts.frame_fields.append(f"{where}.image")
        elif kind == "video":
            if not segment.video.frames:
                raise ValidationError(f"{where}.video.frames", "must hold at least one frame")
            for number, frame in enumerate(segment.video.frames):
                parts.frames.append(decode_image(frame, f"{where}.video.frames[{number}]"))
                parts.frame_fields.append(f"{where}.video.frames[{number}]")
        else:
            if parts.audio is not None:
                raise ValidationError(f"{where}.audio", "only one audio segment per request is supported")
            parts.audio, parts.sample_rate = decode_audio(segment.audio, f"{where}.audio")
            parts.audio_field = f"{where}.audio"
        media_seen = media_seen or kind != "text"
    if segments[last].WhichOneof("content") != "text" or not parts.question.strip():
        raise ValidationError(f"segments[{last}]", "the last segment must be the question, a non-empty text")
    return parts


def _check_frames(processor: AVTinyProcessor, parts: PromptParts) -> np.ndarray | None:
    """Stack the frames ``uint8 [T, H, W, 3]`` after checking the processor's limits."""
    if not parts.frames:
        return None
    height, width = parts.frames[0].shape[:2]
    patch = processor.features.patch
    for array, where in zip(parts.frames, parts.frame_fields, strict=True):
        if array.shape[:2] != (height, width):
            raise ValidationError(
                where,
                f"frames must share one size: {width}x{height} first, {array.shape[1]}x{array.shape[0]} here",
            )
    if height % patch or width % patch or max(height, width) > patch * MAX_GRID:
        raise ValidationError(
            parts.frame_fields[0],
            f"frame sides must be multiples of {patch} and at most {patch * MAX_GRID} pixels, "
            f"got {width}x{height}",
        )
    if len(parts.frames) > processor.max_timestamp:
        raise ValidationError(
            parts.frame_fields[processor.max_timestamp],
            f"too many frames: this model takes at most {processor.max_timestamp}, got {len(parts.frames)}",
        )
    return np.stack(parts.frames)


def _check_audio(processor: AVTinyProcessor, parts: PromptParts) -> None:
    seconds = len(parts.audio) / parts.sample_rate
    windows = int(seconds * processor.features.sample_rate) // processor.features.window_samples
    steps = -(-windows // processor.audio_tokens_per_step)
    if steps > processor.max_timestamp:
        limit = processor.max_timestamp * processor.audio_tokens_per_step * processor.features.window_samples
        raise ValidationError(
            f"{parts.audio_field}.data",
            f"audio too long: at most {limit / processor.features.sample_rate:.2f} s, got {seconds:.2f} s",
        )


def build_av_inputs(processor: AVTinyProcessor, segments: list[inference_pb2.Segment]) -> AVInputs:
    """The processor's ``AVInputs`` (``input_ids [1, L]``, ``aux_ids [1, L, 4]``, layout) of a request."""
    parts = gather_parts(segments)
    frames = _check_frames(processor, parts)
    if parts.audio is not None:
        _check_audio(processor, parts)
    return processor(
        text=" ".join(parts.passage),
        frames=frames,
        audio=parts.audio,
        sample_rate=parts.sample_rate,
        question=parts.question,
        first_timestamp=0,
    )
