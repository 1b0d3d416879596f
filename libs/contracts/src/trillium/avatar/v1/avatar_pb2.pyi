from trillium.common.v1 import media_pb2 as _media_pb2
from trillium.common.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AvatarKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AVATAR_KIND_UNSPECIFIED: _ClassVar[AvatarKind]
    AVATAR_KIND_HEAD: _ClassVar[AvatarKind]
    AVATAR_KIND_FULL_BODY: _ClassVar[AvatarKind]

class FrameEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FRAME_ENCODING_UNSPECIFIED: _ClassVar[FrameEncoding]
    FRAME_ENCODING_RAW_RGB8: _ClassVar[FrameEncoding]
    FRAME_ENCODING_JPEG: _ClassVar[FrameEncoding]
    FRAME_ENCODING_PNG: _ClassVar[FrameEncoding]
    FRAME_ENCODING_H264: _ClassVar[FrameEncoding]

class Renderer(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RENDERER_UNSPECIFIED: _ClassVar[Renderer]
    RENDERER_CPU: _ClassVar[Renderer]
    RENDERER_GSPLAT: _ClassVar[Renderer]

class Pacing(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PACING_UNSPECIFIED: _ClassVar[Pacing]
    PACING_REALTIME: _ClassVar[Pacing]
    PACING_OFFLINE: _ClassVar[Pacing]
AVATAR_KIND_UNSPECIFIED: AvatarKind
AVATAR_KIND_HEAD: AvatarKind
AVATAR_KIND_FULL_BODY: AvatarKind
FRAME_ENCODING_UNSPECIFIED: FrameEncoding
FRAME_ENCODING_RAW_RGB8: FrameEncoding
FRAME_ENCODING_JPEG: FrameEncoding
FRAME_ENCODING_PNG: FrameEncoding
FRAME_ENCODING_H264: FrameEncoding
RENDERER_UNSPECIFIED: Renderer
RENDERER_CPU: Renderer
RENDERER_GSPLAT: Renderer
PACING_UNSPECIFIED: Pacing
PACING_REALTIME: Pacing
PACING_OFFLINE: Pacing

class AvatarInfo(_message.Message):
    __slots__ = ("avatar_id", "display_name", "kind", "num_gaussians", "expression_names", "audio_driven", "format_version", "size_bytes", "sha256", "joint_names")
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NUM_GAUSSIANS_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_NAMES_FIELD_NUMBER: _ClassVar[int]
    AUDIO_DRIVEN_FIELD_NUMBER: _ClassVar[int]
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    JOINT_NAMES_FIELD_NUMBER: _ClassVar[int]
    avatar_id: str
    display_name: str
    kind: AvatarKind
    num_gaussians: int
    expression_names: _containers.RepeatedScalarFieldContainer[str]
    audio_driven: bool
    format_version: int
    size_bytes: int
    sha256: str
    joint_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, avatar_id: _Optional[str] = ..., display_name: _Optional[str] = ..., kind: _Optional[_Union[AvatarKind, str]] = ..., num_gaussians: _Optional[int] = ..., expression_names: _Optional[_Iterable[str]] = ..., audio_driven: _Optional[bool] = ..., format_version: _Optional[int] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., joint_names: _Optional[_Iterable[str]] = ...) -> None: ...

class ListAvatarsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAvatarsResponse(_message.Message):
    __slots__ = ("avatars",)
    AVATARS_FIELD_NUMBER: _ClassVar[int]
    avatars: _containers.RepeatedCompositeFieldContainer[AvatarInfo]
    def __init__(self, avatars: _Optional[_Iterable[_Union[AvatarInfo, _Mapping]]] = ...) -> None: ...

class LoadAvatarHeader(_message.Message):
    __slots__ = ("avatar_id", "display_name", "blob", "replace")
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    avatar_id: str
    display_name: str
    blob: _tensor_pb2.BlobHeader
    replace: bool
    def __init__(self, avatar_id: _Optional[str] = ..., display_name: _Optional[str] = ..., blob: _Optional[_Union[_tensor_pb2.BlobHeader, _Mapping]] = ..., replace: _Optional[bool] = ...) -> None: ...

class LoadAvatarRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: LoadAvatarHeader
    chunk: _tensor_pb2.BlobChunk
    def __init__(self, header: _Optional[_Union[LoadAvatarHeader, _Mapping]] = ..., chunk: _Optional[_Union[_tensor_pb2.BlobChunk, _Mapping]] = ...) -> None: ...

class Camera(_message.Message):
    __slots__ = ("yaw_degrees", "pitch_degrees", "distance", "fov_y_degrees", "view_matrix")
    YAW_DEGREES_FIELD_NUMBER: _ClassVar[int]
    PITCH_DEGREES_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    FOV_Y_DEGREES_FIELD_NUMBER: _ClassVar[int]
    VIEW_MATRIX_FIELD_NUMBER: _ClassVar[int]
    yaw_degrees: float
    pitch_degrees: float
    distance: float
    fov_y_degrees: float
    view_matrix: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, yaw_degrees: _Optional[float] = ..., pitch_degrees: _Optional[float] = ..., distance: _Optional[float] = ..., fov_y_degrees: _Optional[float] = ..., view_matrix: _Optional[_Iterable[float]] = ...) -> None: ...

class RenderSettings(_message.Message):
    __slots__ = ("width", "height", "encoding", "jpeg_quality", "background", "camera", "renderer")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    JPEG_QUALITY_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    RENDERER_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    encoding: FrameEncoding
    jpeg_quality: int
    background: _containers.RepeatedScalarFieldContainer[float]
    camera: Camera
    renderer: Renderer
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., encoding: _Optional[_Union[FrameEncoding, str]] = ..., jpeg_quality: _Optional[int] = ..., background: _Optional[_Iterable[float]] = ..., camera: _Optional[_Union[Camera, _Mapping]] = ..., renderer: _Optional[_Union[Renderer, str]] = ...) -> None: ...

class MotionParams(_message.Message):
    __slots__ = ("expression", "head_rotation", "head_translation", "jaw_rotation", "body_pose")
    class ExpressionEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    HEAD_ROTATION_FIELD_NUMBER: _ClassVar[int]
    HEAD_TRANSLATION_FIELD_NUMBER: _ClassVar[int]
    JAW_ROTATION_FIELD_NUMBER: _ClassVar[int]
    BODY_POSE_FIELD_NUMBER: _ClassVar[int]
    expression: _containers.ScalarMap[str, float]
    head_rotation: _containers.RepeatedScalarFieldContainer[float]
    head_translation: _containers.RepeatedScalarFieldContainer[float]
    jaw_rotation: _containers.RepeatedScalarFieldContainer[float]
    body_pose: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, expression: _Optional[_Mapping[str, float]] = ..., head_rotation: _Optional[_Iterable[float]] = ..., head_translation: _Optional[_Iterable[float]] = ..., jaw_rotation: _Optional[_Iterable[float]] = ..., body_pose: _Optional[_Iterable[float]] = ...) -> None: ...

class RenderFrameRequest(_message.Message):
    __slots__ = ("avatar_id", "motion", "settings")
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    MOTION_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    avatar_id: str
    motion: MotionParams
    settings: RenderSettings
    def __init__(self, avatar_id: _Optional[str] = ..., motion: _Optional[_Union[MotionParams, _Mapping]] = ..., settings: _Optional[_Union[RenderSettings, _Mapping]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("index", "timestamp_seconds", "encoding", "width", "height", "data", "render_seconds", "encode_seconds", "keyframe")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    RENDER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ENCODE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KEYFRAME_FIELD_NUMBER: _ClassVar[int]
    index: int
    timestamp_seconds: float
    encoding: FrameEncoding
    width: int
    height: int
    data: bytes
    render_seconds: float
    encode_seconds: float
    keyframe: bool
    def __init__(self, index: _Optional[int] = ..., timestamp_seconds: _Optional[float] = ..., encoding: _Optional[_Union[FrameEncoding, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., data: _Optional[bytes] = ..., render_seconds: _Optional[float] = ..., encode_seconds: _Optional[float] = ..., keyframe: _Optional[bool] = ...) -> None: ...

class AnimateConfig(_message.Message):
    __slots__ = ("avatar_id", "settings", "fps", "max_queued_frames", "speaker_id", "max_pending_frames", "pacing", "max_render_lag_seconds")
    AVATAR_ID_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    SPEAKER_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_PENDING_FRAMES_FIELD_NUMBER: _ClassVar[int]
    PACING_FIELD_NUMBER: _ClassVar[int]
    MAX_RENDER_LAG_SECONDS_FIELD_NUMBER: _ClassVar[int]
    avatar_id: str
    settings: RenderSettings
    fps: float
    max_queued_frames: int
    speaker_id: str
    max_pending_frames: int
    pacing: Pacing
    max_render_lag_seconds: float
    def __init__(self, avatar_id: _Optional[str] = ..., settings: _Optional[_Union[RenderSettings, _Mapping]] = ..., fps: _Optional[float] = ..., max_queued_frames: _Optional[int] = ..., speaker_id: _Optional[str] = ..., max_pending_frames: _Optional[int] = ..., pacing: _Optional[_Union[Pacing, str]] = ..., max_render_lag_seconds: _Optional[float] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("audio", "timestamp_seconds")
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    audio: _media_pb2.Audio
    timestamp_seconds: float
    def __init__(self, audio: _Optional[_Union[_media_pb2.Audio, _Mapping]] = ..., timestamp_seconds: _Optional[float] = ...) -> None: ...

class MotionFrame(_message.Message):
    __slots__ = ("motion", "timestamp_seconds")
    MOTION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    motion: MotionParams
    timestamp_seconds: float
    def __init__(self, motion: _Optional[_Union[MotionParams, _Mapping]] = ..., timestamp_seconds: _Optional[float] = ...) -> None: ...

class EndOfStream(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AnimateRequest(_message.Message):
    __slots__ = ("config", "audio", "motion", "end")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    MOTION_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    config: AnimateConfig
    audio: AudioChunk
    motion: MotionFrame
    end: EndOfStream
    def __init__(self, config: _Optional[_Union[AnimateConfig, _Mapping]] = ..., audio: _Optional[_Union[AudioChunk, _Mapping]] = ..., motion: _Optional[_Union[MotionFrame, _Mapping]] = ..., end: _Optional[_Union[EndOfStream, _Mapping]] = ...) -> None: ...

class StreamStats(_message.Message):
    __slots__ = ("frames_rendered", "frames_dropped", "time_to_first_frame_seconds", "mean_render_seconds", "frames_dropped_render_lag")
    FRAMES_RENDERED_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_FRAME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEAN_RENDER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DROPPED_RENDER_LAG_FIELD_NUMBER: _ClassVar[int]
    frames_rendered: int
    frames_dropped: int
    time_to_first_frame_seconds: float
    mean_render_seconds: float
    frames_dropped_render_lag: int
    def __init__(self, frames_rendered: _Optional[int] = ..., frames_dropped: _Optional[int] = ..., time_to_first_frame_seconds: _Optional[float] = ..., mean_render_seconds: _Optional[float] = ..., frames_dropped_render_lag: _Optional[int] = ...) -> None: ...

class AnimateResponse(_message.Message):
    __slots__ = ("frame", "stats")
    FRAME_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    frame: Frame
    stats: StreamStats
    def __init__(self, frame: _Optional[_Union[Frame, _Mapping]] = ..., stats: _Optional[_Union[StreamStats, _Mapping]] = ...) -> None: ...
