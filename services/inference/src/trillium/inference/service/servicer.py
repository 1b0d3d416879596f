"""InferenceService over gRPC: a thin layer over kvcompress, the model catalogue and the session store.

Generation itself (Generate) is not served yet: the base servicer answers UNIMPLEMENTED for it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from trillium.inference.service.catalogue import scan_models
from trillium.inference.service.policies import list_policies_response
from trillium.inference.v1 import inference_pb2, inference_pb2_grpc
from trillium.servicekit.errors import NotFoundError, UnavailableError, ValidationError
from trillium.servicekit.redis_store import SessionStore, validate_session_id

_MODALITY_BY_LABEL = {"text": 1, "image": 2, "video": 3, "audio": 4}


def _timestamp(seconds: str | None) -> Timestamp | None:
    if not seconds:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(datetime.fromtimestamp(float(seconds), tz=UTC))
    return stamp


def session_message(session_id: str, meta: dict[str, str], ttl_seconds: int) -> inference_pb2.Session:
    """A ``Session`` from its Redis metadata hash (fields per the platform's key schema)."""
    per_modality = []
    for label, modality in _MODALITY_BY_LABEL.items():
        seen, kept = meta.get(f"seen_{label}"), meta.get(f"kept_{label}")
        if seen is not None:
            per_modality.append(
                inference_pb2.ModalityTokens(modality=modality, seen=int(seen), kept=int(kept or 0))
            )
    last_access = meta.get("last_access")
    expires = str(float(last_access) + ttl_seconds) if last_access else None
    return inference_pb2.Session(
        session_id=session_id,
        model=meta.get("model", ""),
        policy=meta.get("policy", ""),
        original_tokens=int(meta.get("original_tokens", 0)),
        kept_tokens=int(meta.get("kept_tokens", 0)),
        next_position=int(meta.get("next_position", 0)),
        turns=int(meta.get("turns", 0)),
        per_modality=per_modality,
        owner=meta.get("owner_pod", ""),
        created_at=_timestamp(meta.get("created_at")),
        last_access=_timestamp(last_access),
        expires_at=_timestamp(expires),
    )


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, sessions: SessionStore | None, models_dir: Path) -> None:
        self.sessions = sessions
        self.models_dir = models_dir
        self._policies = list_policies_response()

    def _store(self) -> SessionStore:
        if self.sessions is None:
            raise UnavailableError("the session store is not connected yet")
        return self.sessions

    @staticmethod
    def _session_id(session_id: str) -> str:
        try:
            return validate_session_id(session_id)
        except ValueError as exc:
            raise ValidationError("session_id", str(exc).removeprefix("session_id: ")) from None

    async def ListCompressionPolicies(self, request, context):
        return self._policies

    async def ListModels(self, request, context):
        return inference_pb2.ListModelsResponse(
            models=[e.info for e in scan_models(self.models_dir).values()]
        )

    async def GetSession(self, request, context):
        session_id = self._session_id(request.session_id)
        store = self._store()
        meta = await store.get_meta(session_id, timeout=context.time_remaining())
        if meta is None:
            raise NotFoundError(f"no session {session_id!r} (it may have expired)", field="session_id")
        return session_message(session_id, meta, store.ttl_seconds)

    async def DeleteSession(self, request, context):
        session_id = self._session_id(request.session_id)
        deleted = await self._store().delete(session_id, timeout=context.time_remaining())
        return inference_pb2.DeleteSessionResponse(deleted=deleted)
