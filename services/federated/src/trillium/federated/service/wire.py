"""Named tensors and scalars on the wire: chunked tensor blobs and ``ParameterValue`` maps.

Every bulk payload (global weights, SCAFFOLD's control variate, FedCFA's pool, client updates) is
a set of named float tensors packed with the service kit's ``pack_tensors`` into one blob that
travels as a ``BlobHeader`` (size, SHA-256, tensor specs) plus ``BlobChunk`` pieces of 1 MiB.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from trillium.common.v1 import tensor_pb2
from trillium.federated.core.types import TensorMap
from trillium.servicekit.chunks import (
    DEFAULT_CHUNK_BYTES,
    TENSOR_MEDIA_TYPE,
    BlobAssembler,
    blob_header,
    iter_chunks,
    pack_tensors,
    unpack_tensors,
)
from trillium.servicekit.errors import ValidationError

WEIGHTS_PAYLOAD = "global_weights"
STRATEGY_PAYLOAD = "strategy_payload"
UPDATE_WEIGHTS = "weights"
UPDATE_EXTRAS = "extras"
# Payload names per strategy (the generic names above for strategies not listed).
STRATEGY_PAYLOAD_NAMES = {"scaffold": "server_control_variate", "fedcfa": "global_pool"}
UPDATE_EXTRAS_NAMES = {"scaffold": "control_variate_delta", "fedcfa": "average_data"}


def strategy_payload_name(strategy: str) -> str:
    """Name of the downlink payload with ``strategy``'s tensors (SCAFFOLD's c, FedCFA's pool)."""
    return STRATEGY_PAYLOAD_NAMES.get(strategy, STRATEGY_PAYLOAD)


def update_extras_name(strategy: str) -> str:
    """Name of the uplink payload with ``strategy``'s client extras (SCAFFOLD's Δc, FedCFA's chunk means)."""
    return UPDATE_EXTRAS_NAMES.get(strategy, UPDATE_EXTRAS)


@dataclass(frozen=True)
class PackedPayload:
    """One named payload ready to send: ``header`` announces ``data`` (the packed tensors)."""

    name: str
    header: tensor_pb2.BlobHeader
    data: bytes

    def chunks(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[tensor_pb2.BlobChunk]:
        return iter_chunks(self.header.id, self.data, chunk_bytes)


def pack_payload(
    name: str, tensors: Mapping[str, torch.Tensor], blob_id: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> PackedPayload:
    """Pack ``tensors`` (any shapes; sent as stored, normally float32) into one announced blob."""
    arrays = {key: tensor.detach().cpu().contiguous().numpy() for key, tensor in tensors.items()}
    data, specs = pack_tensors(arrays)
    header = blob_header(blob_id, data, TENSOR_MEDIA_TYPE, specs, chunk_bytes)
    return PackedPayload(name, header, data)


def tensors_from_blob(data: bytes, header: tensor_pb2.BlobHeader, field: str) -> TensorMap:
    """Inverse of :func:`pack_payload` (copies, so the tensors are writable)."""
    arrays = unpack_tensors(data, header.tensors, f"{field}.tensors")
    return {name: torch.from_numpy(np.array(array, copy=True)) for name, array in arrays.items()}


class PayloadReceiver:
    """Reassembles the chunks of the payloads a header announced (any order of blobs, chunks in order).

    ``max_bytes`` bounds every blob; errors are ``ValidationError``/``ResourceExhaustedError`` naming
    the field (``header.payloads[i].blob...``, ``chunk.id``...).
    """

    def __init__(self, payloads: list, max_bytes: int, field: str = "header.payloads") -> None:
        self._by_blob: dict[str, tuple[str, BlobAssembler]] = {}
        for index, payload in enumerate(payloads):
            where = f"{field}[{index}]"
            if not payload.name:
                raise ValidationError(f"{where}.name", "must not be empty")
            if payload.blob.id in self._by_blob:
                raise ValidationError(f"{where}.blob.id", f"duplicate blob id {payload.blob.id!r}")
            if any(name == payload.name for name, _ in self._by_blob.values()):
                raise ValidationError(f"{where}.name", f"duplicate payload {payload.name!r}")
            self._by_blob[payload.blob.id] = (
                payload.name,
                BlobAssembler(payload.blob, max_bytes, f"{where}.blob"),
            )

    def add(self, chunk: tensor_pb2.BlobChunk) -> None:
        entry = self._by_blob.get(chunk.id)
        if entry is None:
            raise ValidationError("chunk.id", f"{chunk.id!r} was not announced in the header")
        entry[1].add(chunk)

    def finish(self) -> dict[str, TensorMap]:
        """Every payload by name, after size and digest checks."""
        result: dict[str, TensorMap] = {}
        for name, assembler in self._by_blob.values():
            data = assembler.finish()
            result[name] = tensors_from_blob(data, assembler.header, assembler.field)
        return result
