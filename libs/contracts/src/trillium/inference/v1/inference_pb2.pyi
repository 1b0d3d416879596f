import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from trillium.common.v1 import media_pb2 as _media_pb2
from trillium.common.v1 import usage_pb2 as _usage_pb2
from trillium.common.v1 import values_pb2 as _values_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Modality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODALITY_UNSPECIFIED: _ClassVar[Modality]
    MODALITY_TEXT: _ClassVar[Modality]
    MODALITY_IMAGE: _ClassVar[Modality]
    MODALITY_VIDEO: _ClassVar[Modality]
    MODALITY_AUDIO: _ClassVar[Modality]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_ABORT: _ClassVar[FinishReason]
MODALITY_UNSPECIFIED: Modality
MODALITY_TEXT: Modality
MODALITY_IMAGE: Modality
MODALITY_VIDEO: Modality
MODALITY_AUDIO: Modality
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_ABORT: FinishReason

class Video(_message.Message):
    __slots__ = ("frames", "fps")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    frames: _containers.RepeatedCompositeFieldContainer[_media_pb2.Image]
    fps: float
    def __init__(self, frames: _Optional[_Iterable[_Union[_media_pb2.Image, _Mapping]]] = ..., fps: _Optional[float] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("text", "image", "video", "audio")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: _media_pb2.Image
    video: Video
    audio: _media_pb2.Audio
    def __init__(self, text: _Optional[str] = ..., image: _Optional[_Union[_media_pb2.Image, _Mapping]] = ..., video: _Optional[_Union[Video, _Mapping]] = ..., audio: _Optional[_Union[_media_pb2.Audio, _Mapping]] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("ratio", "tokens")
    RATIO_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    ratio: float
    tokens: int
    def __init__(self, ratio: _Optional[float] = ..., tokens: _Optional[int] = ...) -> None: ...

class SparsePrefill(_message.Message):
    __slots__ = ("enabled", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _values_pb2.ParameterValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_values_pb2.ParameterValue, _Mapping]] = ...) -> None: ...
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    parameters: _containers.MessageMap[str, _values_pb2.ParameterValue]
    def __init__(self, enabled: _Optional[bool] = ..., parameters: _Optional[_Mapping[str, _values_pb2.ParameterValue]] = ...) -> None: ...

class CompressionConfig(_message.Message):
    __slots__ = ("policy", "budget", "parameters", "sparse_prefill")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _values_pb2.ParameterValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_values_pb2.ParameterValue, _Mapping]] = ...) -> None: ...
    POLICY_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    SPARSE_PREFILL_FIELD_NUMBER: _ClassVar[int]
    policy: str
    budget: Budget
    parameters: _containers.MessageMap[str, _values_pb2.ParameterValue]
    sparse_prefill: SparsePrefill
    def __init__(self, policy: _Optional[str] = ..., budget: _Optional[_Union[Budget, _Mapping]] = ..., parameters: _Optional[_Mapping[str, _values_pb2.ParameterValue]] = ..., sparse_prefill: _Optional[_Union[SparsePrefill, _Mapping]] = ...) -> None: ...

class GenerationParams(_message.Message):
    __slots__ = ("max_new_tokens", "temperature", "top_p", "top_k", "seed", "stop", "ignore_eos")
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    IGNORE_EOS_FIELD_NUMBER: _ClassVar[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    seed: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    ignore_eos: bool
    def __init__(self, max_new_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., seed: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ..., ignore_eos: _Optional[bool] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("model", "segments", "compression", "generation", "session_id", "return_token_ids")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RETURN_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    model: str
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    compression: CompressionConfig
    generation: GenerationParams
    session_id: str
    return_token_ids: bool
    def __init__(self, model: _Optional[str] = ..., segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ..., compression: _Optional[_Union[CompressionConfig, _Mapping]] = ..., generation: _Optional[_Union[GenerationParams, _Mapping]] = ..., session_id: _Optional[str] = ..., return_token_ids: _Optional[bool] = ...) -> None: ...

class ModalityTokens(_message.Message):
    __slots__ = ("modality", "seen", "kept")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    SEEN_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    modality: Modality
    seen: int
    kept: int
    def __init__(self, modality: _Optional[_Union[Modality, str]] = ..., seen: _Optional[int] = ..., kept: _Optional[int] = ...) -> None: ...

class LayerTokens(_message.Message):
    __slots__ = ("layer", "kept_per_head")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    KEPT_PER_HEAD_FIELD_NUMBER: _ClassVar[int]
    layer: int
    kept_per_head: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, layer: _Optional[int] = ..., kept_per_head: _Optional[_Iterable[int]] = ...) -> None: ...

class CompressionSummary(_message.Message):
    __slots__ = ("policy", "tokens_before", "tokens_kept", "kv_bytes_before", "kv_bytes_after", "per_modality", "per_layer", "compression_seconds", "sparse_prefill", "prefill_attention_density")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    TOKENS_BEFORE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_KEPT_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_BEFORE_FIELD_NUMBER: _ClassVar[int]
    KV_BYTES_AFTER_FIELD_NUMBER: _ClassVar[int]
    PER_MODALITY_FIELD_NUMBER: _ClassVar[int]
    PER_LAYER_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SPARSE_PREFILL_FIELD_NUMBER: _ClassVar[int]
    PREFILL_ATTENTION_DENSITY_FIELD_NUMBER: _ClassVar[int]
    policy: str
    tokens_before: int
    tokens_kept: int
    kv_bytes_before: int
    kv_bytes_after: int
    per_modality: _containers.RepeatedCompositeFieldContainer[ModalityTokens]
    per_layer: _containers.RepeatedCompositeFieldContainer[LayerTokens]
    compression_seconds: float
    sparse_prefill: bool
    prefill_attention_density: float
    def __init__(self, policy: _Optional[str] = ..., tokens_before: _Optional[int] = ..., tokens_kept: _Optional[int] = ..., kv_bytes_before: _Optional[int] = ..., kv_bytes_after: _Optional[int] = ..., per_modality: _Optional[_Iterable[_Union[ModalityTokens, _Mapping]]] = ..., per_layer: _Optional[_Iterable[_Union[LayerTokens, _Mapping]]] = ..., compression_seconds: _Optional[float] = ..., sparse_prefill: _Optional[bool] = ..., prefill_attention_density: _Optional[float] = ...) -> None: ...

class PrefillSummary(_message.Message):
    __slots__ = ("session_id", "model", "prompt_tokens", "compression", "prefill_seconds")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    PREFILL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    model: str
    prompt_tokens: int
    compression: CompressionSummary
    prefill_seconds: float
    def __init__(self, session_id: _Optional[str] = ..., model: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., compression: _Optional[_Union[CompressionSummary, _Mapping]] = ..., prefill_seconds: _Optional[float] = ...) -> None: ...

class TokenDelta(_message.Message):
    __slots__ = ("index", "text", "token_ids")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    index: int
    text: str
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, index: _Optional[int] = ..., text: _Optional[str] = ..., token_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class GenerationFinished(_message.Message):
    __slots__ = ("finish_reason", "usage", "timing")
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    finish_reason: FinishReason
    usage: _usage_pb2.Usage
    timing: _usage_pb2.Timing
    def __init__(self, finish_reason: _Optional[_Union[FinishReason, str]] = ..., usage: _Optional[_Union[_usage_pb2.Usage, _Mapping]] = ..., timing: _Optional[_Union[_usage_pb2.Timing, _Mapping]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("prefill", "delta", "finished")
    PREFILL_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    prefill: PrefillSummary
    delta: TokenDelta
    finished: GenerationFinished
    def __init__(self, prefill: _Optional[_Union[PrefillSummary, _Mapping]] = ..., delta: _Optional[_Union[TokenDelta, _Mapping]] = ..., finished: _Optional[_Union[GenerationFinished, _Mapping]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "model", "policy", "original_tokens", "kept_tokens", "next_position", "turns", "per_modality", "owner", "created_at", "last_access", "expires_at")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    KEPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    NEXT_POSITION_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    PER_MODALITY_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_ACCESS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    model: str
    policy: str
    original_tokens: int
    kept_tokens: int
    next_position: int
    turns: int
    per_modality: _containers.RepeatedCompositeFieldContainer[ModalityTokens]
    owner: str
    created_at: _timestamp_pb2.Timestamp
    last_access: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, session_id: _Optional[str] = ..., model: _Optional[str] = ..., policy: _Optional[str] = ..., original_tokens: _Optional[int] = ..., kept_tokens: _Optional[int] = ..., next_position: _Optional[int] = ..., turns: _Optional[int] = ..., per_modality: _Optional[_Iterable[_Union[ModalityTokens, _Mapping]]] = ..., owner: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_access: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "revision", "modalities", "max_context_tokens", "architecture", "num_layers", "num_kv_heads", "head_dim", "dtype", "backend")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    NUM_KV_HEADS_FIELD_NUMBER: _ClassVar[int]
    HEAD_DIM_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    name: str
    revision: str
    modalities: _containers.RepeatedScalarFieldContainer[Modality]
    max_context_tokens: int
    architecture: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: str
    backend: str
    def __init__(self, name: _Optional[str] = ..., revision: _Optional[str] = ..., modalities: _Optional[_Iterable[_Union[Modality, str]]] = ..., max_context_tokens: _Optional[int] = ..., architecture: _Optional[str] = ..., num_layers: _Optional[int] = ..., num_kv_heads: _Optional[int] = ..., head_dim: _Optional[int] = ..., dtype: _Optional[str] = ..., backend: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class ListCompressionPoliciesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PolicyInfo(_message.Message):
    __slots__ = ("name", "description", "paper", "parameters", "modalities", "merges_tokens")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PAPER_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    MERGES_TOKENS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    paper: str
    parameters: _containers.RepeatedCompositeFieldContainer[_values_pb2.ParameterSpec]
    modalities: _containers.RepeatedScalarFieldContainer[Modality]
    merges_tokens: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., paper: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[_values_pb2.ParameterSpec, _Mapping]]] = ..., modalities: _Optional[_Iterable[_Union[Modality, str]]] = ..., merges_tokens: _Optional[bool] = ...) -> None: ...

class ListCompressionPoliciesResponse(_message.Message):
    __slots__ = ("policies", "sparse_prefill_parameters")
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    SPARSE_PREFILL_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    policies: _containers.RepeatedCompositeFieldContainer[PolicyInfo]
    sparse_prefill_parameters: _containers.RepeatedCompositeFieldContainer[_values_pb2.ParameterSpec]
    def __init__(self, policies: _Optional[_Iterable[_Union[PolicyInfo, _Mapping]]] = ..., sparse_prefill_parameters: _Optional[_Iterable[_Union[_values_pb2.ParameterSpec, _Mapping]]] = ...) -> None: ...
