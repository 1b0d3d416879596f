"""Per-sequence, per-layer KV storage in the engine, and the attention each kind computes.

A running sequence owns one store per decoder layer:

* :class:`DenseLayerKV` - a preallocated ``[H_kv, capacity, D]`` buffer, written chunk by chunk
  during a (chunked) prefill. A full-cache request keeps it for decoding (capacity = prompt +
  ``max_new_tokens``: decode never reallocates). A compressing request's buffer holds the
  uncompressed prompt only until the policy has run on that layer (capacity = prompt).
* :class:`CompressedLayerKV` - the policy's kept entries, in kvcompress's
  :class:`~trillium.kvcompress.cache.CompressedLayer` (uniform dense, or ragged per KV head), with
  decode capacity for ``max_new_tokens`` allocated at the first decoded token: one reallocation,
  after which the bytes equal the reservation exactly.

Both expose the same three operations the batched step needs: ``append`` keys/values of new tokens,
``attend_one`` for a decode query, and ``segments`` (per-KV-head key/value views, for the packed
CUDA kernel). Queries are grouped per KV head (``[H_kv, G * Q, D]``), so GQA keys and values are
never repeated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trillium.kvcompress.cache import CompressedLayer

__all__ = ["CompressedLayerKV", "DenseLayerKV", "LayerKV", "grouped_causal_attention"]


def grouped_causal_attention(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float, *, column_sums: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal attention of the last ``Q`` positions over ``T`` keys that end with them.

    Args:
        query: ``[H_q, Q, D]`` post-RoPE queries; query ``i`` sits at key position ``T - Q + i``.
        keys, values: ``[H_kv, T, D]`` (``H_q = G * H_kv``).
        scale: softmax scale.
        column_sums: also return ``[H_q, T]``, the attention each key received from these queries
            (the chunk's share of H2O's accumulated score); computed with explicit softmax.

    Returns:
        ``([H_q, Q, D_v] output, [H_q, T] column sums or None)``.
    """
    num_q_heads, q_len, dim = query.shape
    num_kv_heads, total = keys.shape[0], keys.shape[1]
    group = num_q_heads // num_kv_heads
    if not column_sums and q_len > 1:
        # SDPA's own GQA with a [Q, T] mask: on CPU 3-4x faster than grouping the queries into
        # [H_kv, G * Q] rows with a [G * Q, T] mask (measured at 512 x 4096, 3 KV heads)
        causal = torch.arange(total, device=query.device) <= torch.arange(
            total - q_len, total, device=query.device
        ).unsqueeze(1)
        out = F.scaled_dot_product_attention(
            query.unsqueeze(0),
            keys.unsqueeze(0),
            values.unsqueeze(0),
            attn_mask=causal,
            scale=scale,
            enable_gqa=True,
        )
        return out[0], None
    grouped = query.reshape(num_kv_heads, group * q_len, dim)
    mask = None
    if q_len > 1:
        query_pos = torch.arange(total - q_len, total, device=query.device).repeat(group)
        mask = torch.arange(total, device=query.device).unsqueeze(0) <= query_pos.unsqueeze(1)
    if not column_sums:  # one query per head: grouped rows, no mask, keys never repeated
        out = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=mask, scale=scale)
        return out.reshape(num_q_heads, q_len, -1), None
    scores = torch.matmul(grouped.float(), keys.float().transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs.to(values.dtype), values).reshape(num_q_heads, q_len, -1)
    sums = probs.view(num_kv_heads, group, q_len, total).sum(dim=2).reshape(num_q_heads, total)
    return out, sums


class DenseLayerKV:
    """A dense ``[H_kv, capacity, D]`` key/value buffer with ``length`` rows written."""

    def __init__(
        self, num_kv_heads: int, capacity: int, head_dim: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        self.keys = torch.empty(num_kv_heads, capacity, head_dim, dtype=dtype, device=device)
        self.values = torch.empty(num_kv_heads, capacity, head_dim, dtype=dtype, device=device)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.keys.shape[1]

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Write ``[H_kv, n, D]`` new rows after the ``length`` already stored."""
        end = self.length + keys.shape[1]
        if end > self.capacity:
            raise ValueError(f"dense KV buffer of {self.capacity} rows cannot hold {end}")
        self.keys[:, self.length : end] = keys
        self.values[:, self.length : end] = values
        self.length = end

    def attend_chunk(
        self, query: torch.Tensor, scale: float, *, column_sums: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Causal attention of the ``Q`` rows just appended (``query`` ``[H_q, Q, D]``)."""
        return grouped_causal_attention(
            query, self.keys[:, : self.length], self.values[:, : self.length], scale, column_sums=column_sums
        )

    def attend_one(self, query: torch.Tensor, scale: float) -> torch.Tensor:
        """``[H_q, D]`` decode query over every stored row -> ``[H_q, D_v]``."""
        out, _ = grouped_causal_attention(
            query.unsqueeze(1), self.keys[:, : self.length], self.values[:, : self.length], scale
        )
        return out[:, 0]

    def segments(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [
            (self.keys[h, : self.length], self.values[h, : self.length]) for h in range(self.keys.shape[0])
        ]

    def nbytes(self) -> int:
        return 2 * self.keys.numel() * self.keys.element_size()


class CompressedLayerKV:
    """A compressed prompt (kvcompress ``CompressedLayer``) plus room for ``max_new_tokens``."""

    def __init__(
        self, keys: list[torch.Tensor], values: list[torch.Tensor], prompt_length: int, max_new_tokens: int
    ) -> None:
        self.layer = CompressedLayer(tail_chunk=max(max_new_tokens, 1))
        self.layer.load_compressed(keys, values, prompt_length=prompt_length)
        self.layer.dtype, self.layer.device = keys[0].dtype, keys[0].device
        self.layer.is_initialized = True

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.layer.update(keys.unsqueeze(0), values.unsqueeze(0))

    def attend_one(self, query: torch.Tensor, scale: float) -> torch.Tensor:
        return self.layer.attend(query.view(1, query.shape[0], 1, query.shape[1]), scale)[0, :, 0]

    def segments(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        layer = self.layer
        if layer.is_uniform:
            total = layer.uniform_length + layer.tail_length
            return [
                (layer.dense_keys[0, h, :total], layer.dense_values[0, h, :total])
                for h in range(layer.num_kv_heads)
            ]
        return [
            (layer.flat_keys[start : start + n], layer.flat_values[start : start + n])
            for start, n in zip(layer.seg_starts, layer.seg_lengths)
        ]

    def kept_per_head(self) -> list[int]:
        return self.layer.kept_per_head()

    def nbytes(self) -> int:
        return self.layer.nbytes()


LayerKV = DenseLayerKV | CompressedLayerKV
