"""Request validation: every bad field becomes a ``ValidationError`` naming it (INVALID_ARGUMENT)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from trillium.avatar.service.scene import (
    DEFAULT_DISTANCE,
    DEFAULT_FOV_Y,
    Camera,
    LoadedAvatar,
    Motion,
    orbit_viewmat,
)
from trillium.avatar.v1 import avatar_pb2
from trillium.servicekit.errors import FailedPreconditionError, ValidationError

MIN_SIZE, MAX_SIZE = 16, 2048
STILL_ENCODINGS = {
    avatar_pb2.FRAME_ENCODING_RAW_RGB8,
    avatar_pb2.FRAME_ENCODING_JPEG,
    avatar_pb2.FRAME_ENCODING_PNG,
}
STREAM_ENCODINGS = {*STILL_ENCODINGS, avatar_pb2.FRAME_ENCODING_H264}
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8_000, 96_000  # telephone to studio rates; resampled to the model's
MAX_CHANNELS = 8


def finite(field: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValidationError(field, f"must be finite, got {value}")
    return float(value)


def vector(field: str, values: Sequence[float], length: int) -> np.ndarray:
    """Empty -> zeros; otherwise exactly ``length`` finite values."""
    if len(values) == 0:
        return np.zeros(length, dtype=np.float32)
    if len(values) != length:
        raise ValidationError(field, f"must have {length} values (or none), got {len(values)}")
    array = np.asarray(values, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValidationError(field, "must be finite (NaN/Inf given)")
    return array


def audio_format(field: str, sample_rate_hz: int, channels: int) -> tuple[int, int]:
    """(sample rate, channels) of a PCM chunk; ``channels`` 0 means mono."""
    if not MIN_SAMPLE_RATE <= sample_rate_hz <= MAX_SAMPLE_RATE:
        raise ValidationError(
            f"{field}.sample_rate_hz",
            f"must be in [{MIN_SAMPLE_RATE}, {MAX_SAMPLE_RATE}] Hz, got {sample_rate_hz}",
        )
    channels = channels or 1
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValidationError(
            f"{field}.channels", f"must be in [1, {MAX_CHANNELS}] (0 = mono), got {channels}"
        )
    return sample_rate_hz, channels


def motion_params(params: avatar_pb2.MotionParams, avatar: LoadedAvatar, field: str = "motion") -> Motion:
    names = avatar.expression_names
    coefficients = np.zeros(len(names), dtype=np.float32)
    for name, value in params.expression.items():
        key = f"{field}.expression[{name!r}]"
        if name not in names:
            raise ValidationError(key, f"unknown expression; known: {', '.join(names)}")
        coefficients[names.index(name)] = finite(key, value)
    jaw = vector(f"{field}.jaw_rotation", params.jaw_rotation, 3)
    if not avatar.has_jaw and np.any(jaw):
        raise ValidationError(f"{field}.jaw_rotation", "this avatar has no jaw joint")
    pose = body_pose(f"{field}.body_pose", params.body_pose, avatar)
    if pose is not None and avatar.jaw_index is not None:
        if len(params.jaw_rotation):
            pose[avatar.jaw_index] = jaw  # an explicit jaw rotation wins over body_pose's jaw entry
        jaw = pose[avatar.jaw_index].copy()
    return Motion(
        coefficients=coefficients,
        head_rotation=vector(f"{field}.head_rotation", params.head_rotation, 3),
        head_translation=vector(f"{field}.head_translation", params.head_translation, 3),
        jaw_rotation=jaw,
        body_pose=pose,
    )


def body_pose(field: str, values: Sequence[float], avatar: LoadedAvatar) -> np.ndarray | None:
    """[J, 3] axis-angle per joint of ``avatar.joint_names``, or None when empty (the rest pose)."""
    if len(values) == 0:
        return None
    joints = avatar.joint_names
    if not joints:
        raise ValidationError(field, "this avatar has no skeleton (no joint_names); leave it empty")
    if len(values) != 3 * len(joints):
        raise ValidationError(
            field,
            f"must have 3 values (axis-angle) per joint of AvatarInfo.joint_names: "
            f"{3 * len(joints)} for {len(joints)} joints, got {len(values)}",
        )
    pose = np.asarray(values, dtype=np.float32).reshape(len(joints), 3)
    if not np.isfinite(pose).all():
        bad = joints[int(np.flatnonzero(~np.isfinite(pose).all(axis=1))[0])]
        raise ValidationError(field, f"must be finite (NaN/Inf given, first at joint {bad!r})")
    return pose


def render_settings(
    settings: avatar_pb2.RenderSettings, field: str = "settings", *, stream: bool = False
) -> tuple[Camera, int, int]:
    """(camera, encoding, jpeg quality); JPEG when the encoding is unspecified."""
    for name in ("width", "height"):
        size = getattr(settings, name)
        if not MIN_SIZE <= size <= MAX_SIZE or size % 2:
            raise ValidationError(
                f"{field}.{name}", f"must be even and in [{MIN_SIZE}, {MAX_SIZE}], got {size}"
            )
    encoding = settings.encoding or avatar_pb2.FRAME_ENCODING_JPEG
    allowed = STREAM_ENCODINGS if stream else STILL_ENCODINGS
    if encoding not in allowed:
        hint = (
            "H.264 is only available from Animate"
            if encoding == avatar_pb2.FRAME_ENCODING_H264
            else "unknown"
        )
        raise ValidationError(f"{field}.encoding", f"{encoding} not supported here ({hint})")
    quality = settings.jpeg_quality or 90
    if not 1 <= quality <= 100:
        raise ValidationError(f"{field}.jpeg_quality", f"must be in [1, 100] (0 = default), got {quality}")
    if settings.renderer == avatar_pb2.RENDERER_GSPLAT and not torch.cuda.is_available():
        raise FailedPreconditionError("gsplat needs a CUDA device; none here", field=f"{field}.renderer")
    background = vector(f"{field}.background", settings.background, 3)
    if np.any((background < 0) | (background > 1)):
        raise ValidationError(f"{field}.background", "values must be in [0, 1]")
    viewmat = _viewmat(settings.camera, f"{field}.camera")
    fov = _fov(settings.camera, f"{field}.camera")
    return (
        Camera(settings.width, settings.height, viewmat, fov, torch.from_numpy(background)),
        encoding,
        quality,
    )


def _fov(camera: avatar_pb2.Camera, field: str) -> float:
    fov = finite(f"{field}.fov_y_degrees", camera.fov_y_degrees) or DEFAULT_FOV_Y
    if not 1.0 <= fov <= 170.0:
        raise ValidationError(f"{field}.fov_y_degrees", f"must be in [1, 170] (0 = default), got {fov}")
    return fov


def _viewmat(camera: avatar_pb2.Camera, field: str) -> torch.Tensor:
    if len(camera.view_matrix):
        matrix = vector(f"{field}.view_matrix", camera.view_matrix, 16).reshape(4, 4)
        if abs(float(np.linalg.det(matrix[:3, :3]))) < 1e-6:
            raise ValidationError(f"{field}.view_matrix", "rotation block is singular")
        return torch.from_numpy(matrix.copy())
    yaw = finite(f"{field}.yaw_degrees", camera.yaw_degrees)
    pitch = finite(f"{field}.pitch_degrees", camera.pitch_degrees)
    if abs(pitch) >= 89.0:
        raise ValidationError(f"{field}.pitch_degrees", f"must be in (-89, 89), got {pitch}")
    distance = finite(f"{field}.distance", camera.distance) or DEFAULT_DISTANCE
    if distance < 0:
        raise ValidationError(f"{field}.distance", f"must not be negative, got {distance}")
    return orbit_viewmat(yaw, pitch, distance)
