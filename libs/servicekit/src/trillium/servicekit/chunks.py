"""Bulk payloads over gRPC: a ``BlobHeader`` then ``BlobChunk`` pieces, verified on arrival.

Control messages stay small; model weights, avatar assets and FL updates travel as chunked blobs
(1 MiB pieces by default) with their total size and SHA-256 announced up front, so a receiver can
bound memory and reject a corrupt or truncated transfer with a status that names the field.
Several tensors may share one blob: ``pack_tensors`` lays them out back to back, little-endian,
C-contiguous, in the order of their ``TensorSpec``s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from trillium.common.v1 import tensor_pb2
from trillium.servicekit.errors import ResourceExhaustedError, ValidationError

DEFAULT_CHUNK_BYTES = 1024 * 1024
TENSOR_MEDIA_TYPE = "application/x-trillium-tensors"

_NUMPY_BY_DTYPE = {
    tensor_pb2.D_TYPE_FLOAT32: np.dtype("<f4"),
    tensor_pb2.D_TYPE_FLOAT16: np.dtype("<f2"),
    tensor_pb2.D_TYPE_FLOAT64: np.dtype("<f8"),
    tensor_pb2.D_TYPE_INT64: np.dtype("<i8"),
    tensor_pb2.D_TYPE_INT32: np.dtype("<i4"),
    tensor_pb2.D_TYPE_INT16: np.dtype("<i2"),
    tensor_pb2.D_TYPE_INT8: np.dtype("i1"),
    tensor_pb2.D_TYPE_UINT8: np.dtype("u1"),
    tensor_pb2.D_TYPE_BOOL: np.dtype("?"),
}
_DTYPE_BY_KIND = {dtype.newbyteorder("<").str: code for code, dtype in _NUMPY_BY_DTYPE.items()}


def blob_header(
    blob_id: str,
    data: bytes,
    media_type: str = "application/octet-stream",
    tensors: Sequence[tensor_pb2.TensorSpec] = (),
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> tensor_pb2.BlobHeader:
    return tensor_pb2.BlobHeader(
        id=blob_id,
        media_type=media_type,
        total_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        chunk_count=max(1, -(-len(data) // chunk_bytes)),
        tensors=list(tensors),
    )


def iter_chunks(
    blob_id: str, data: bytes, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[tensor_pb2.BlobChunk]:
    """The pieces of ``data``; an empty blob is one empty chunk."""
    if chunk_bytes <= 0:
        raise ValueError("chunk_bytes: must be positive")
    view = memoryview(data)
    for index, start in enumerate(range(0, max(len(data), 1), chunk_bytes)):
        yield tensor_pb2.BlobChunk(id=blob_id, index=index, data=bytes(view[start : start + chunk_bytes]))


class BlobAssembler:
    """Collects the chunks of one announced blob and verifies size, order and SHA-256.

    ``field`` prefixes the field names in errors (e.g. ``"header.blob"``).
    """

    def __init__(self, header: tensor_pb2.BlobHeader, max_bytes: int, field: str = "blob") -> None:
        if not header.id:
            raise ValidationError(f"{field}.id", "must not be empty")
        if header.total_bytes < 0:
            raise ValidationError(f"{field}.total_bytes", "must not be negative")
        if header.total_bytes > max_bytes:
            raise ResourceExhaustedError(
                f"{header.total_bytes} bytes announced, the limit is {max_bytes}",
                field=f"{field}.total_bytes",
            )
        if len(header.sha256) != 64:
            raise ValidationError(f"{field}.sha256", "must be a 64-character hex SHA-256 digest")
        self.header, self.field = header, field
        self._parts: list[bytes] = []
        self._received = 0
        self._digest = hashlib.sha256()

    def add(self, chunk: tensor_pb2.BlobChunk) -> None:
        if chunk.id != self.header.id:
            raise ValidationError(
                "chunk.id", f"{chunk.id!r} does not match the announced blob {self.header.id!r}"
            )
        if chunk.index != len(self._parts):
            raise ValidationError("chunk.index", f"expected chunk {len(self._parts)}, got {chunk.index}")
        self._received += len(chunk.data)
        if self._received > self.header.total_bytes:
            raise ValidationError(
                "chunk.data",
                f"more than the announced {self.header.total_bytes} bytes ({self.field}.total_bytes)",
            )
        self._parts.append(chunk.data)
        self._digest.update(chunk.data)

    @property
    def complete(self) -> bool:
        return self._received == self.header.total_bytes and bool(self._parts or self.header.total_bytes == 0)

    def finish(self) -> bytes:
        if self._received != self.header.total_bytes:
            raise ValidationError(
                f"{self.field}.total_bytes",
                f"announced {self.header.total_bytes} bytes, received {self._received}",
            )
        if self._digest.hexdigest() != self.header.sha256.lower():
            raise ValidationError(
                f"{self.field}.sha256", "the received bytes do not match the announced digest"
            )
        return b"".join(self._parts)


def pack_tensors(tensors: Mapping[str, np.ndarray]) -> tuple[bytes, list[tensor_pb2.TensorSpec]]:
    """Concatenate named arrays (little-endian, C order) and describe them."""
    specs, parts = [], []
    for name, array in tensors.items():
        array = np.asarray(array, order="C")  # (ascontiguousarray would turn 0-d into 1-d)
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        code = _DTYPE_BY_KIND.get(little.dtype.str)
        if code is None:
            raise ValueError(f"tensors[{name!r}]: dtype {array.dtype} cannot be sent")
        specs.append(tensor_pb2.TensorSpec(name=name, dtype=code, shape=list(array.shape)))
        parts.append(little.tobytes())
    return b"".join(parts), specs


def unpack_tensors(
    data: bytes, specs: Sequence[tensor_pb2.TensorSpec], field: str = "tensors"
) -> dict[str, np.ndarray]:
    """Inverse of ``pack_tensors``; every size and dtype is checked against ``data``."""
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for i, spec in enumerate(specs):
        dtype = _NUMPY_BY_DTYPE.get(spec.dtype)
        if dtype is None:
            raise ValidationError(f"{field}[{i}].dtype", f"unsupported dtype {spec.dtype}")
        if any(dim < 0 for dim in spec.shape):
            raise ValidationError(f"{field}[{i}].shape", "dimensions must not be negative")
        if spec.name in arrays:
            raise ValidationError(f"{field}[{i}].name", f"duplicate tensor name {spec.name!r}")
        nbytes = int(np.prod(spec.shape, dtype=np.int64)) * dtype.itemsize
        if offset + nbytes > len(data):
            raise ValidationError(
                f"{field}[{i}].shape", f"{spec.name!r} needs more bytes than the payload holds"
            )
        arrays[spec.name] = np.frombuffer(
            data, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset
        ).reshape(tuple(spec.shape))
        offset += nbytes
    if offset != len(data):
        raise ValidationError(field, f"{len(data) - offset} bytes left over after the last tensor")
    return arrays
