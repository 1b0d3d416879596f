"""Chunked blobs and packed tensors: round trips and every rejection names its field."""

from __future__ import annotations

import numpy as np
import pytest

from trillium.common.v1 import tensor_pb2
from trillium.servicekit.chunks import (
    BlobAssembler,
    blob_header,
    iter_chunks,
    pack_tensors,
    unpack_tensors,
)
from trillium.servicekit.errors import ResourceExhaustedError, ValidationError


@pytest.mark.parametrize("size", [0, 1, 1000, 4096, 4097])
def test_blob_round_trip(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    header = blob_header("b", data, chunk_bytes=1024)
    chunks = list(iter_chunks("b", data, chunk_bytes=1024))
    assert len(chunks) == header.chunk_count == max(1, -(-size // 1024))
    assembler = BlobAssembler(header, max_bytes=10_000)
    for chunk in chunks:
        assembler.add(chunk)
    assert assembler.complete and assembler.finish() == data


def test_corrupt_truncated_and_oversized_blobs_are_rejected():
    data = b"x" * 3000
    header = blob_header("b", data, chunk_bytes=1000)
    chunks = list(iter_chunks("b", data, chunk_bytes=1000))
    with pytest.raises(ResourceExhaustedError) as info:
        BlobAssembler(header, max_bytes=100, field="header.blob")
    assert info.value.field == "header.blob.total_bytes"

    truncated = BlobAssembler(header, max_bytes=10_000)
    truncated.add(chunks[0])
    with pytest.raises(ValidationError, match="blob.total_bytes"):
        truncated.finish()

    corrupt = BlobAssembler(header, max_bytes=10_000)
    for chunk in chunks[:-1]:
        corrupt.add(chunk)
    corrupt.add(tensor_pb2.BlobChunk(id="b", index=2, data=b"y" * 1000))
    with pytest.raises(ValidationError, match="blob.sha256"):
        corrupt.finish()

    out_of_order = BlobAssembler(header, max_bytes=10_000)
    with pytest.raises(ValidationError, match="chunk.index"):
        out_of_order.add(chunks[1])
    with pytest.raises(ValidationError, match="chunk.id"):
        out_of_order.add(tensor_pb2.BlobChunk(id="other", index=0, data=b""))
    too_much = BlobAssembler(header, max_bytes=10_000)
    for chunk in chunks:
        too_much.add(chunk)
    with pytest.raises(ValidationError, match="chunk.data"):
        too_much.add(tensor_pb2.BlobChunk(id="b", index=3, data=b"z"))


def test_tensors_round_trip_with_dtypes_and_shapes():
    rng = np.random.default_rng(0)
    tensors = {
        "w": rng.standard_normal((3, 4)).astype(np.float32),
        "b": rng.standard_normal(4).astype(np.float16),
        "steps": np.arange(5, dtype=np.int64),
        "mask": np.array([[True, False]]),
        "scalar": np.float64(2.5).reshape(()),
    }
    data, specs = pack_tensors(tensors)
    back = unpack_tensors(data, specs)
    assert list(back) == list(tensors)
    for name, array in tensors.items():
        assert back[name].dtype == array.dtype.newbyteorder("<") and np.array_equal(back[name], array)


def test_tensor_payload_mismatches_name_the_field():
    data, specs = pack_tensors({"w": np.zeros((2, 2), np.float32)})
    with pytest.raises(ValidationError, match=r"tensors\[0\].shape"):
        unpack_tensors(data[:-4], specs)
    with pytest.raises(ValidationError, match="left over"):
        unpack_tensors(data + b"\0", specs)
    bad = tensor_pb2.TensorSpec(name="w", dtype=tensor_pb2.D_TYPE_BFLOAT16, shape=[2, 2])
    with pytest.raises(ValidationError, match=r"tensors\[0\].dtype"):
        unpack_tensors(data, [bad])
    with pytest.raises(ValueError, match="complex"):
        pack_tensors({"complex": np.zeros(2, np.complex64)})
