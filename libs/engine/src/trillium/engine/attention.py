"""Attention of one engine step: many sequences' tokens packed into one forward pass.

The runner packs every scheduled token of a step into a single ``[1, T]`` row (decode tokens of
all running sequences first, then the prefill chunks), with each token's own position id, and
runs the Hugging Face decoder once. Everything in a decoder layer is per token except attention,
so only attention needs to know the packing: transformers calls :func:`engine_attention` (registered
under :data:`ENGINE_ATTENTION`) with the packed ``query`` / ``key`` / ``value`` of the layer, and it
routes each sequence's slice to that sequence's own cache (:mod:`trillium.engine.kv`):

* decode tokens: their keys and values are appended to each sequence's store, then one
  :func:`decode_attention` call covers every (sequence x KV head) segment of the layer;
* prefill chunks: appended to the sequence's dense prompt buffer, causal attention over it; at a
  prompt's last chunk the sequence's policy compresses the layer right there, before the next
  layer runs (one dense layer plus the compressed ones at any time, as in kvcompress's ``compress``).

The mask function registered beside it returns ``None``: transformers then builds no
``[T, T]`` mask for the packed row, whose causal structure is per sequence and handled here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Protocol

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface

from trillium.engine.kv import LayerKV
from trillium.kvcompress.kernels.varlen_decode import varlen_decode_attention

__all__ = [
    "ENGINE_ATTENTION",
    "PackedStep",
    "decode_attention",
    "decode_attention_packed",
    "decode_attention_reference",
    "engine_attention",
]

ENGINE_ATTENTION = "trillium_engine"


class PackedStep(Protocol):
    """What one forward pass holds; the runner implements it (see :class:`trillium.engine.runner`).

    ``attend(module, query, key, value, scale)`` gets the layer's packed ``[1, H_q, T, D]`` query and
    ``[1, H_kv, T, D]`` keys/values and returns ``[T, H_q, D_v]``."""

    def attend(
        self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float
    ) -> torch.Tensor: ...


_STEP: ContextVar[PackedStep | None] = ContextVar("trillium_engine_step", default=None)


@contextlib.contextmanager
def active_step(step: PackedStep) -> Iterator[PackedStep]:
    """``with active_step(step): model(...)`` routes the model's attention through ``step``."""
    token = _STEP.set(step)
    try:
        yield step
    finally:
        _STEP.reset(token)


def engine_attention(  # noqa: PLR0917 (transformers calls attention functions positionally)
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention-interface entry: the active step's routing, or plain SDPA outside a step."""
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    step = _STEP.get()
    if step is None:
        out, _ = sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scale, **kwargs
        )
        return out, None
    return step.attend(module, query, key, value, scale).unsqueeze(0), None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    return None


AttentionInterface.register(ENGINE_ATTENTION, engine_attention)
AttentionMaskInterface.register(ENGINE_ATTENTION, _no_mask)


def decode_attention(
    queries: torch.Tensor, stores: list[LayerKV], scale: float, *, backend: str = "auto"
) -> torch.Tensor:
    """One decode query per sequence over that sequence's store, for a whole layer at once.

    Args:
        queries: ``[S, H_q, D]`` post-RoPE queries, row ``i`` belongs to ``stores[i]`` (whose
            keys already include this token's).
        stores: the ``S`` sequences' stores of this layer (dense, uniform or ragged).
        scale: softmax scale.
        backend: ``"views"`` attends each store in place (zero-copy views, one fused SDPA per
            sequence - per KV head for a ragged store); ``"packed"`` packs every (sequence x KV
            head) segment into one varlen call (kvcompress's Triton kernel on CUDA, its torch
            version elsewhere); ``"auto"`` picks ``packed`` on CUDA and ``views`` on CPU, where
            copying the segments costs more memory traffic than the per-sequence calls save.

    Returns:
        ``[S, H_q, D_v]``.
    """
    if backend == "auto":
        backend = "packed" if queries.is_cuda else "views"
    if backend == "views":
        return torch.stack([store.attend_one(queries[i], scale) for i, store in enumerate(stores)])
    if backend == "packed":
        return decode_attention_packed(queries, stores, scale)
    raise ValueError(f"backend must be 'auto', 'views' or 'packed', got {backend!r}")


def decode_attention_packed(queries: torch.Tensor, stores: list[LayerKV], scale: float) -> torch.Tensor:
    """:func:`decode_attention` through one varlen call over (sequence x KV head) segments."""
    segments = [segment for store in stores for segment in store.segments()]
    lengths = torch.tensor([0] + [k.shape[0] for k, _ in segments], dtype=torch.long)
    cu_seqlens = lengths.cumsum(0).to(queries.device)
    keys = torch.cat([k for k, _ in segments])
    values = torch.cat([v for _, v in segments])
    out, _ = varlen_decode_attention(
        queries.unsqueeze(2), keys, values, cu_seqlens, int(lengths.max()), scale
    )
    return out[:, :, 0]


def decode_attention_reference(queries: torch.Tensor, stores: list[LayerKV], scale: float) -> torch.Tensor:
    """Slow, obvious reference: one softmax per sequence and query head, in float64."""
    num_q_heads = queries.shape[1]
    out = []
    for i, store in enumerate(stores):
        segments = store.segments()
        group = num_q_heads // len(segments)
        rows = []
        for head in range(num_q_heads):
            keys, values = segments[head // group]
            probs = torch.softmax(keys.double() @ queries[i, head].double() * scale, dim=0)
            rows.append(probs @ values.double())
        out.append(torch.stack(rows))
    return torch.stack(out).to(queries.dtype)
