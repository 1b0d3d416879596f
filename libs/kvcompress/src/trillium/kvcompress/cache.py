"""A transformers ``Cache`` whose bytes really shrink after compression (batch size 1).

Two storage modes per layer, chosen at compression time:

* **uniform** (every KV head keeps the same number of entries): one dense buffer
  ``[1, H_kv, capacity, D]`` holding the kept prompt entries followed by the decoded tokens.
  Decode attention is a single fused SDPA call with the queries grouped per KV head
  (``[1, H_kv, G * Q, D]``), so keys and values are never repeated for GQA.
* **ragged** (per-head budgets: AdaKV, MadaKV, AccKV): a flattened varlen layout. Every KV head
  owns one contiguous segment of ``flat_keys`` / ``flat_values`` ``[capacity_total, D]``; segment
  ``h`` starts at ``seg_offsets[h]`` (``[H_kv + 1]`` int64). Right after compression the segments are
  packed back to back, so ``seg_offsets`` equals ``cu_seqlens`` of
  :func:`trillium.kvcompress.ops.varlen.varlen_decode_attention`; decoded tokens are appended inside
  each segment. Decode attention runs one fused SDPA per KV head over its segment (grouped queries);
  on CPU this beats a varlen prefix pass plus a log-sum-exp merge with the tail for short segments.

Right after compression the bytes are exact: kept entries only, plus ``8 * (H_kv + 1)`` bytes of
offsets for a ragged layer (the stated bound: no padding at all). Decoded tokens are written in place
into capacity that grows in chunks of ``tail_chunk`` tokens (at most ``tail_chunk - 1`` reserved
slots per head), never by concatenating the whole cache at every step.

Before compression (during prefill) a layer behaves like transformers' ``DynamicLayer``.
``get_seq_length()`` reports the **logical** length (original prompt + decoded tokens), so positions
inferred from the cache stay those of the uncompressed prompt; :meth:`CompressedLayer.kept_per_head`
gives what is stored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, CacheLayerMixin

__all__ = ["CompressedCache", "CompressedLayer"]


def _tensor_bytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class CompressedLayer(CacheLayerMixin):
    """One decoder layer's cache: dense during prefill, packed varlen + dense tail afterwards."""

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, tail_chunk: int = 64) -> None:
        super().__init__()
        self.tail_chunk = tail_chunk
        self.is_compressed = False
        self.prompt_length = 0
        self.num_kv_heads = 0
        self.kept_counts: list[int] = []
        self.tail_length = 0
        # uniform mode
        self.is_uniform = False
        self.uniform_length = 0
        self.dense_keys: torch.Tensor | None = None
        self.dense_values: torch.Tensor | None = None
        # ragged mode
        self.flat_keys: torch.Tensor | None = None
        self.flat_values: torch.Tensor | None = None
        self.seg_offsets: torch.Tensor | None = None
        self.seg_starts: list[int] = []
        self.seg_caps: list[int] = []
        self.seg_lengths: list[int] = []

    # ------------------------------------------------------------ CacheLayerMixin
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.keys = key_states[:, :, :0]
        self.values = value_states[:, :, :0]
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefill: append densely and return the full keys/values. Compressed: write the new tokens
        into the tail and return them (the attention function reads the layer itself)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if not self.is_compressed:
            self.keys = torch.cat([self.keys, key_states], dim=-2)
            self.values = torch.cat([self.values, value_states], dim=-2)
            return self.keys, self.values
        if key_states.shape[0] != 1:
            raise ValueError(f"key_states batch must be 1 for a compressed cache, got {key_states.shape[0]}")
        self._append_tail(key_states, value_states)
        return key_states, value_states

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_seq_length(self) -> int:
        if self.is_compressed:
            return self.prompt_length + self.tail_length
        if not self.is_initialized or self.keys is None:
            return 0
        return self.keys.shape[-2]

    def get_max_length(self) -> int:
        return -1

    # ------------------------------------------------------------ compression
    def load_compressed(
        self, keys: list[torch.Tensor], values: list[torch.Tensor], prompt_length: int
    ) -> None:
        """Replace the dense prompt by per-head kept entries ``keys[h]`` ``[n_h, D]`` (no padding)."""
        if self.is_compressed:
            raise ValueError("layer is already compressed")
        counts = [k.shape[0] for k in keys]
        self.prompt_length = prompt_length
        self.num_kv_heads = len(keys)
        self.kept_counts = counts
        self.keys = None
        self.values = None
        self.is_compressed = True
        if len(set(counts)) == 1:
            self.is_uniform = True
            self.uniform_length = counts[0]
            self.dense_keys = torch.stack(keys).unsqueeze(0).contiguous()
            self.dense_values = torch.stack(values).unsqueeze(0).contiguous()
            return
        self.flat_keys = torch.cat(keys).contiguous()
        self.flat_values = torch.cat(values).contiguous()
        self.seg_lengths = list(counts)
        self._set_offsets([0, *torch.tensor(counts).cumsum(0).tolist()])

    def _set_offsets(self, offsets: list[int]) -> None:
        self.seg_starts = offsets[:-1]
        self.seg_caps = [b - a for a, b in zip(offsets[:-1], offsets[1:])]
        self.seg_offsets = torch.tensor(offsets, dtype=torch.long)

    @property
    def cu_seqlens(self) -> torch.Tensor:
        """``[H_kv + 1]`` prefix sums of the kept prompt entries per head (packed varlen layout)."""
        return torch.tensor([0, *torch.tensor(self.kept_counts).cumsum(0).tolist()], dtype=torch.long)

    def _append_tail(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        if self.is_uniform:
            self._append_uniform(key_states, value_states)
        else:
            self._append_ragged(key_states, value_states)
        self.tail_length += key_states.shape[-2]

    def _grown(self, buffer: torch.Tensor, used: int, needed: int) -> torch.Tensor:
        capacity = buffer.shape[-2]
        grown = buffer.new_empty(
            *buffer.shape[:-2], capacity + max(self.tail_chunk, needed - capacity), buffer.shape[-1]
        )
        grown[..., :used, :] = buffer[..., :used, :]
        return grown

    def _append_uniform(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        start = self.uniform_length + self.tail_length
        needed = start + key_states.shape[-2]
        if needed > self.dense_keys.shape[-2]:
            self.dense_keys = self._grown(self.dense_keys, start, needed)
            self.dense_values = self._grown(self.dense_values, start, needed)
        self.dense_keys[:, :, start:needed] = key_states
        self.dense_values[:, :, start:needed] = value_states

    def _append_ragged(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        new = key_states.shape[-2]
        if any(n + new > c for n, c in zip(self.seg_lengths, self.seg_caps)):
            self._regrow(new)
        rows = torch.tensor([s + n for s, n in zip(self.seg_starts, self.seg_lengths)]).unsqueeze(
            1
        ) + torch.arange(new)
        self.flat_keys.index_copy_(0, rows.flatten(), key_states[0].reshape(-1, key_states.shape[-1]))
        self.flat_values.index_copy_(0, rows.flatten(), value_states[0].reshape(-1, value_states.shape[-1]))
        self.seg_lengths = [n + new for n in self.seg_lengths]

    def _regrow(self, new: int) -> None:
        """Give every head ``max(tail_chunk, new)`` free slots (one copy per ``tail_chunk`` steps)."""
        caps = [n + max(self.tail_chunk, new) for n in self.seg_lengths]
        offsets = [0, *torch.tensor(caps).cumsum(0).tolist()]
        keys = self.flat_keys.new_empty(offsets[-1], self.flat_keys.shape[-1])
        values = self.flat_values.new_empty(offsets[-1], self.flat_values.shape[-1])
        for h, n in enumerate(self.seg_lengths):
            old = self.seg_starts[h]
            keys[offsets[h] : offsets[h] + n] = self.flat_keys[old : old + n]
            values[offsets[h] : offsets[h] + n] = self.flat_values[old : old + n]
        self.flat_keys, self.flat_values = keys, values
        self._set_offsets(offsets)

    # ------------------------------------------------------------ attention
    def attend(self, query: torch.Tensor, scale: float) -> torch.Tensor:
        """Attention of the newest ``Q`` queries ``[1, H_q, Q, D]`` over the kept prompt entries and
        the decoded tokens (whose keys ``update`` already stored) -> ``[1, H_q, Q, D_v]``."""
        batch, num_q_heads, q_len, dim = query.shape
        group = num_q_heads // self.num_kv_heads
        grouped = query.reshape(batch, self.num_kv_heads, group * q_len, dim)
        if self.is_uniform:
            total = self.uniform_length + self.tail_length
            keys, values = self.dense_keys[:, :, :total], self.dense_values[:, :, :total]
            out = F.scaled_dot_product_attention(
                grouped, keys, values, attn_mask=_causal_tail_mask(total, q_len, group), scale=scale
            )
            return out.view(batch, num_q_heads, q_len, -1)
        outs = []
        for h in range(self.num_kv_heads):
            start, n = self.seg_starts[h], self.seg_lengths[h]
            keys = self.flat_keys[start : start + n].view(1, 1, n, -1)
            values = self.flat_values[start : start + n].view(1, 1, n, -1)
            mask = _causal_tail_mask(n, q_len, group)
            outs.append(
                F.scaled_dot_product_attention(
                    grouped[:, h : h + 1], keys, values, attn_mask=mask, scale=scale
                )
            )
        return torch.cat(outs, dim=1).view(batch, num_q_heads, q_len, -1)

    # ------------------------------------------------------------ introspection
    def kept_per_head(self) -> list[int]:
        """Prompt entries stored per KV head."""
        if not self.is_compressed:
            return [self.get_seq_length()] * (0 if self.keys is None else self.keys.shape[1])
        return list(self.kept_counts)

    def nbytes(self) -> int:
        """Exact bytes of every tensor the layer holds (reserved decode capacity included)."""
        if not self.is_compressed:
            return _tensor_bytes(self.keys, self.values)
        if self.is_uniform:
            return _tensor_bytes(self.dense_keys, self.dense_values)
        return _tensor_bytes(self.flat_keys, self.flat_values, self.seg_offsets)

    def dense_prefix(self, head: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Kept prompt keys and values of one KV head, ``[n_h, D]`` each (views)."""
        n = self.kept_counts[head]
        if self.is_uniform:
            return self.dense_keys[0, head, :n], self.dense_values[0, head, :n]
        start = self.seg_starts[head]
        return self.flat_keys[start : start + n], self.flat_values[start : start + n]


def _causal_tail_mask(total: int, q_len: int, group: int) -> torch.Tensor | None:
    """``[group * Q, total]`` bool: grouped query row ``(g, i)`` sees keys ``0 .. total - Q + i``."""
    if q_len == 1:
        return None
    query_pos = torch.arange(total - q_len, total).repeat(group)
    return torch.arange(total).unsqueeze(0) <= query_pos.unsqueeze(1)


class CompressedCache(Cache):
    """A ``Cache`` of :class:`CompressedLayer` (batch size 1), see the module docstring."""

    def __init__(self, num_layers: int, tail_chunk: int = 64) -> None:
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        super().__init__(layers=[CompressedLayer(tail_chunk=tail_chunk) for _ in range(num_layers)])

    def nbytes(self) -> int:
        """Exact bytes held by all layers."""
        return sum(layer.nbytes() for layer in self.layers)

    def kept_per_layer_head(self) -> list[list[int]]:
        return [layer.kept_per_head() for layer in self.layers]

    @property
    def is_compressed(self) -> bool:
        return all(layer.is_compressed for layer in self.layers)
