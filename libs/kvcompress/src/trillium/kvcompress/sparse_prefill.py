"""ST-SpAttn: spatial-temporal block-sparse prefill attention for video tokens (PureKV, arXiv 2510.25600).

PureKV sparsifies video prefill attention spatially (inside a frame, suppress background tiles) and
temporally (across frames, suppress near-duplicate frames) to "purify" the cache and speed prefill up.
**The paper gives no mask formulas**; the mask below is our design, built from the block-sparse prefill
anchors MMInference (ICML'25, grid pattern of video attention), XAttention (ICML'25, block importance
with threshold selection) and FlexPrefill (ICLR'25, blocks kept up to a cumulative attention mass
``gamma``). Text, image and audio tokens attend densely.

The sequence is cut into tiles of ``block_size`` tokens. For every KV head (shared by its GQA query
group) and every causal pair (query tile, key tile):

1. query tiles containing any non-video token (text, image, audio rows) keep every causal key tile;
2. key tiles containing a text token or one of the first ``num_sink_tokens`` tokens are kept;
3. the query tile itself (diagonal) and key tiles holding video frames ``f >= g - local_frames`` for a
   query frame ``g`` are kept (temporal locality);
4. near-duplicate frames - mean per-token cosine of corresponding key vectors to the previous frame
   ``> delta`` - form runs; outside the local window, tiles made only of duplicate frames are skipped,
   and the first frame of each run (its representative) is always kept instead;
5. the remaining candidate tiles are ranked by a pooled estimate ``softmax_j(mean(q_i) . mean(k_j) /
   sqrt(d) + log|tile_j|)`` (averaged over the GQA group) and kept, largest first, until kept mass
   (mandatory tiles included, renormalised over the non-skipped tiles) reaches ``gamma``;
6. element level: causal on top (``j <= i``).

With ``gamma >= 1`` and ``delta > 1`` every causal tile is kept: the plan is dense causal attention
(tested). Tiles are uniform so the plan maps onto a flex_attention ``BlockMask`` and onto the Triton
kernel in :mod:`trillium.kvcompress.kernels.block_sparse`.

Backends for :func:`st_sparse_attention` (all compute only kept tiles, except ``reference``):

- ``torch`` (CPU default): query tiles that keep the same number of key tiles are batched; their kept
  tiles are gathered and one SDPA call per batch runs with a causal mask on the diagonal tile only.
- ``flex``: ``torch.compile(flex_attention)`` with the plan as a ``BlockMask`` (diagonal tiles
  partial/causal, the rest full). The first call per sequence length compiles (10-30 s on CPU).
  Measured with ``bench/kv_micro/prefill.py`` (2-core CPU shared with other jobs, one thread, fp32,
  8k and 16k tokens, 64- and 256-token frames, two runs): ``torch`` was faster than compiled flex in
  7 of 8 measurements (up to 1.7x) and 2% slower in the eighth, and it needs no compile,
  so it is the CPU default.
- ``triton``: the Triton kernel (default on CUDA tensors).
- ``reference``: dense SDPA with the expanded element mask (slow, obvious).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from trillium.kvcompress.kernels.block_sparse import (
    block_sparse_attention_reference,
    block_sparse_attention_torch,
    block_sparse_attention_triton,
)

__all__ = [
    "ATTENTION_NAME",
    "AUDIO",
    "IMAGE",
    "TEXT",
    "VIDEO",
    "SparsePrefillPlan",
    "SparsePrefillSession",
    "STSparseParams",
    "build_sparse_prefill_plan",
    "detect_duplicate_frames",
    "register_st_sparse_attention",
    "sparse_prefill",
    "st_sparse_attention",
    "st_sparse_attention_forward",
    "st_sparse_attention_reference",
]

TEXT, IMAGE, VIDEO, AUDIO = 0, 1, 2, 3
ATTENTION_NAME = "trillium_st_sparse"
Backend = Literal["auto", "torch", "flex", "triton", "reference"]
_BACKENDS = ("auto", "torch", "flex", "triton", "reference")


@dataclass(frozen=True)
class STSparseParams:
    """Hyperparameters of the ST-SpAttn mask (our design choices; PureKV publishes none).

    Attributes:
        block_size: tokens per tile (query and key); 64 divides the usual 64-256-token frames.
        num_sink_tokens: leading tokens always attended (attention sinks).
        local_frames: ``r``, previous frames always attended besides the own frame.
        gamma: cumulative pooled-attention mass to cover with candidate tiles (1.0 keeps all).
        delta: cosine threshold above which a frame is a near-duplicate of the previous one (> 1: never).
        duplicate_source: vectors compared for duplicates. ``keys`` follows the spec; ``values`` carry no
            rotary position and so see through RoPE's per-position rotation of otherwise equal content.
        backend: attention backend, see the module docstring.
        max_density: plans whose token density exceeds this run as dense causal attention instead
            (:func:`st_sparse_attention`): above the kernel's break-even a sparse pass is slower than
            the dense one. The plan is still built first (on the trained av-tiny's 1-2k-token clips,
            whose plans keep every tile, that alone made the prefill 0.76-0.80x of dense). 0.7 is the CPU
            break-even measured with ``bench/kv_micro/prefill.py`` (the torch backend against SDPA at
            8k tokens: 0.94x at density 0.917, 1.45x at 0.557, 3.31x at 0.207); 1.0 never falls back.
    """

    block_size: int = 64
    num_sink_tokens: int = 4
    local_frames: int = 1
    gamma: float = 0.9
    delta: float = 0.95
    duplicate_source: Literal["keys", "values"] = "keys"
    backend: Backend = "auto"
    max_density: float = 0.7

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"block_size must be positive, got {self.block_size}")
        if self.num_sink_tokens < 0:
            raise ValueError(f"num_sink_tokens must be >= 0, got {self.num_sink_tokens}")
        if self.local_frames < 0:
            raise ValueError(f"local_frames must be >= 0, got {self.local_frames}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if self.duplicate_source not in ("keys", "values"):
            raise ValueError(f"duplicate_source must be 'keys' or 'values', got {self.duplicate_source!r}")
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {self.backend!r}")
        if not 0.0 <= self.max_density <= 1.0:
            raise ValueError(f"max_density must be in [0, 1], got {self.max_density}")


@dataclass(frozen=True)
class SparsePrefillPlan:
    """Kept (query tile, key tile) pairs of one attention call.

    Attributes:
        block_size: tokens per tile.
        seq_len: ``L``.
        block_mask: ``bool[B, H_kv, NQ, NK]``, causal kept tile pairs (NQ = NK = ceil(L / block_size)).
        kv_num_blocks: ``int32[B, H_kv, NQ]``, kept key tiles per query tile (flex ``BlockMask`` layout).
        kv_indices: ``int32[B, H_kv, NQ, NK]``, their ids ascending; entries past ``kv_num_blocks`` are NK.
        duplicate_frames: ``bool[B, H_kv, F]``, frames detected as near-duplicates of their predecessor.
    """

    block_size: int
    seq_len: int
    block_mask: torch.Tensor
    kv_num_blocks: torch.Tensor
    kv_indices: torch.Tensor
    duplicate_frames: torch.Tensor

    @classmethod
    def from_block_mask(
        cls,
        block_mask: torch.Tensor,
        block_size: int,
        seq_len: int,
        duplicate_frames: torch.Tensor | None = None,
    ) -> SparsePrefillPlan:
        """Build a plan from ``bool[B, H_kv, NQ, NK]`` kept pairs (the upper triangle is dropped)."""
        num_blocks = math.ceil(seq_len / block_size)
        if block_mask.dim() != 4 or block_mask.shape[-2:] != (num_blocks, num_blocks):
            raise ValueError(
                f"block_mask must be [B, H_kv, {num_blocks}, {num_blocks}], got {tuple(block_mask.shape)}"
            )
        causal = torch.ones(num_blocks, num_blocks, dtype=torch.bool, device=block_mask.device).tril()
        block_mask = block_mask.bool() & causal
        block_ids = torch.arange(num_blocks, device=block_mask.device)
        kv_indices = torch.where(block_mask, block_ids, num_blocks).sort(dim=-1).values.to(torch.int32)
        kv_num_blocks = block_mask.sum(dim=-1, dtype=torch.int32)
        if duplicate_frames is None:
            duplicate_frames = torch.zeros(
                *block_mask.shape[:2], 0, dtype=torch.bool, device=block_mask.device
            )
        return cls(block_size, seq_len, block_mask, kv_num_blocks, kv_indices, duplicate_frames)

    @property
    def num_blocks(self) -> int:
        return self.block_mask.shape[-1]

    def block_density(self) -> float:
        """Kept causal tile pairs / all causal tile pairs, averaged over batch and heads."""
        causal_pairs = self.num_blocks * (self.num_blocks + 1) // 2
        return float(self.block_mask.sum()) / (
            causal_pairs * self.block_mask.shape[0] * self.block_mask.shape[1]
        )

    def token_density(self) -> float:
        """Kept causal (query, key) token pairs / ``L (L + 1) / 2``, averaged over batch and heads."""
        sizes = torch.full(
            (self.num_blocks,), self.block_size, dtype=torch.float64, device=self.block_mask.device
        )
        sizes[-1] = self.seq_len - self.block_size * (self.num_blocks - 1)
        pair_tokens = sizes[:, None] * sizes[None, :]
        pair_tokens.diagonal().copy_(sizes * (sizes + 1) / 2)
        kept = (self.block_mask.double() * pair_tokens).sum()
        total = self.seq_len * (self.seq_len + 1) / 2 * self.block_mask.shape[0] * self.block_mask.shape[1]
        return float(kept) / total

    def stats(self, max_density: float = 1.0) -> dict[str, float]:
        """Summary numbers for logs and benchmarks (``dense_fallback``: 1.0 when a plan this dense
        runs as dense attention under ``max_density``)."""
        return {
            "seq_len": float(self.seq_len),
            "block_size": float(self.block_size),
            "block_density": self.block_density(),
            "token_density": self.token_density(),
            "dense_fallback": float(self.token_density() > max_density),
            "duplicate_frame_fraction": float(self.duplicate_frames.float().mean())
            if self.duplicate_frames.numel()
            else 0.0,
            "mean_kept_blocks_per_query_block": float(self.kv_num_blocks.float().mean()),
        }


@dataclass(frozen=True)
class _TileLayout:
    """Per-tile facts derived from the token layout (shared by every head)."""

    num_frames: int
    frame_ordinal: torch.Tensor  # int64[L], -1 for non-video tokens
    dense_query: torch.Tensor  # bool[NQ]
    always_key: torch.Tensor  # bool[NK]
    local: torch.Tensor  # bool[NQ, NK]
    video_query: torch.Tensor  # bool[NQ]
    tile_sizes: torch.Tensor  # float[NK]


def _validate_layout(modality: torch.Tensor, frame_index: torch.Tensor, seq_len: int) -> None:
    if modality.shape != (seq_len,):
        raise ValueError(f"modality must be int[{seq_len}], got shape {tuple(modality.shape)}")
    if frame_index.shape != (seq_len,):
        raise ValueError(f"frame_index must be int[{seq_len}], got shape {tuple(frame_index.shape)}")
    if bool(((modality < TEXT) | (modality > AUDIO)).any()):
        raise ValueError("modality values must be 0 (text), 1 (image), 2 (video) or 3 (audio)")
    if bool((frame_index[modality == VIDEO] < 0).any()):
        raise ValueError("frame_index must be >= 0 for every video token")


def _frame_ordinals(modality: torch.Tensor, frame_index: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Number video frames 0, 1, ... in order of appearance; a frame starts where frame_index changes."""
    ordinal = torch.full_like(frame_index, -1)
    video_pos = torch.nonzero(modality == VIDEO).flatten()
    if video_pos.numel() == 0:
        return ordinal, 0
    frames = frame_index[video_pos]
    starts = torch.ones_like(frames, dtype=torch.bool)
    starts[1:] = frames[1:] != frames[:-1]
    ordinal[video_pos] = torch.cumsum(starts.long(), 0) - 1
    return ordinal, int(starts.sum())


def _per_tile(values: torch.Tensor, num_blocks: int, block_size: int, fill: float | bool) -> torch.Tensor:
    """``[..., L]`` -> ``[..., NB, block_size]`` padded with ``fill``."""
    pad = num_blocks * block_size - values.shape[-1]
    padded = torch.nn.functional.pad(values, (0, pad), value=fill)
    return padded.view(*values.shape[:-1], num_blocks, block_size)


def _tile_layout(modality: torch.Tensor, frame_index: torch.Tensor, params: STSparseParams) -> _TileLayout:
    seq_len, size = modality.shape[0], params.block_size
    num_blocks = math.ceil(seq_len / size)
    ordinal, num_frames = _frame_ordinals(modality, frame_index)
    is_video = modality == VIDEO
    positions = torch.arange(seq_len, device=modality.device)
    anchor = (modality == TEXT) | (positions < params.num_sink_tokens)
    dense_query = _per_tile(~is_video, num_blocks, size, False).any(-1)
    video_query = _per_tile(is_video, num_blocks, size, False).any(-1)
    always_key = _per_tile(anchor, num_blocks, size, False).any(-1)
    big = seq_len + 1
    min_frame = _per_tile(torch.where(is_video, ordinal, big), num_blocks, size, big).amin(-1)
    max_frame = _per_tile(torch.where(is_video, ordinal, -big), num_blocks, size, -big).amax(-1)
    has_video = video_query
    local = (
        has_video[:, None]
        & has_video[None, :]
        & (max_frame[None, :] >= min_frame[:, None] - params.local_frames)
        & (min_frame[None, :] <= max_frame[:, None])
    )
    local |= torch.eye(num_blocks, dtype=torch.bool, device=modality.device)
    tile_sizes = torch.full((num_blocks,), float(size), device=modality.device)
    tile_sizes[-1] = seq_len - size * (num_blocks - 1)
    return _TileLayout(num_frames, ordinal, dense_query, always_key, local, video_query, tile_sizes)


def detect_duplicate_frames(
    features: torch.Tensor, frame_ordinal: torch.Tensor, num_frames: int, delta: float
) -> torch.Tensor:
    """Flag frames whose tokens repeat the previous frame (temporal redundancy, our design).

    Args:
        features: ``[B, H, L, D]`` key (or value) vectors.
        frame_ordinal: ``int64[L]``, frame number per token (0, 1, ... in order), -1 for non-video.
        num_frames: ``F``.
        delta: threshold; frame ``f`` is a duplicate when the mean over tokens of ``cos(x_t^f, x_t^{f-1})``
            (token ``t`` of frame ``f`` against token ``t`` of frame ``f-1``) exceeds it, per batch row and
            head. Frames of different token counts are compared by the cosine of their mean vectors.

    Returns:
        ``bool[B, H, F]``; frame 0 is never a duplicate.
    """
    batch, heads = features.shape[:2]
    duplicates = torch.zeros(batch, heads, num_frames, dtype=torch.bool, device=features.device)
    if num_frames < 2 or delta > 1.0:
        return duplicates
    video_pos = torch.nonzero(frame_ordinal >= 0).flatten()
    order = video_pos[torch.argsort(frame_ordinal[video_pos], stable=True)]
    frame_of = frame_ordinal[order]
    counts = torch.bincount(frame_of, minlength=num_frames)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.numel(), device=order.device) - starts[frame_of]
    paired = (frame_of > 0) & (counts[frame_of] == counts[(frame_of - 1).clamp(min=0)])
    partner = order[(starts[(frame_of - 1).clamp(min=0)] + rank).clamp(max=order.numel() - 1)]
    unit = torch.nn.functional.normalize(features.float(), dim=-1)
    token_cosine = (unit[:, :, order] * unit[:, :, partner]).sum(-1) * paired
    per_frame = torch.zeros(batch, heads, num_frames, device=features.device)
    per_frame.index_add_(-1, frame_of, token_cosine)
    per_frame = per_frame / counts.clamp(min=1)
    means = torch.zeros(batch, heads, num_frames, features.shape[-1], device=features.device)
    means.index_add_(2, frame_of, features[:, :, order].float())
    mean_cosine = torch.nn.functional.cosine_similarity(means[:, :, 1:], means[:, :, :-1], dim=-1)
    same_size = counts[1:] == counts[:-1]
    cosine = torch.where(same_size, per_frame[:, :, 1:], mean_cosine)
    duplicates[:, :, 1:] = cosine > delta
    return duplicates


def _duplicate_tiles(
    duplicates: torch.Tensor, layout: _TileLayout, params: STSparseParams, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Key tiles made only of duplicate frames, and key tiles holding the first frame of a duplicate run.

    Returns two ``bool[B, H_kv, NK]``.
    """
    batch, heads, num_frames = duplicates.shape
    num_blocks = layout.dense_query.shape[0]
    if num_frames == 0:  # no video frame: nothing is a duplicate or a representative
        none = torch.zeros(batch, heads, num_blocks, dtype=torch.bool, device=duplicates.device)
        return none, none.clone()
    frame_ids = torch.arange(num_frames, device=duplicates.device)
    run_start = torch.cummax(torch.where(duplicates, 0, frame_ids), dim=-1).values
    duplicates_per_run = torch.zeros(duplicates.shape, dtype=torch.long, device=duplicates.device)
    duplicates_per_run.scatter_add_(-1, run_start, duplicates.long())
    representative = (duplicates_per_run > 0) & ~duplicates
    ordinal = layout.frame_ordinal
    is_video = ordinal >= 0
    safe = ordinal.clamp(min=0).expand(batch, heads, seq_len)
    token_duplicate = torch.gather(duplicates, -1, safe) & is_video
    token_representative = torch.gather(representative, -1, safe) & is_video
    all_duplicate = _per_tile(token_duplicate, num_blocks, params.block_size, True).all(-1)
    has_representative = _per_tile(token_representative, num_blocks, params.block_size, False).any(-1)
    return all_duplicate & ~layout.always_key, has_representative


def _pooled_block_probs(
    query: torch.Tensor, keys: torch.Tensor, allowed: torch.Tensor, layout: _TileLayout, block_size: int
) -> torch.Tensor:
    """Tile-level attention estimate ``[B, H_kv, NQ, NK]`` from mean-pooled queries and keys."""
    batch, heads_q, seq_len, dim = query.shape
    heads_kv = keys.shape[1]
    num_blocks = allowed.shape[-1]
    sizes = layout.tile_sizes.to(torch.float32)
    pad = num_blocks * block_size - seq_len
    pooled_q = torch.nn.functional.pad(query.float(), (0, 0, 0, pad)).view(
        batch, heads_q, num_blocks, block_size, dim
    )
    pooled_k = torch.nn.functional.pad(keys.float(), (0, 0, 0, pad)).view(
        batch, heads_kv, num_blocks, block_size, dim
    )
    pooled_q = pooled_q.sum(3) / sizes[:, None]
    pooled_k = pooled_k.sum(3) / sizes[:, None]
    grouped_q = pooled_q.view(batch, heads_kv, heads_q // heads_kv, num_blocks, dim)
    logits = torch.einsum("bhgqd,bhkd->bhgqk", grouped_q, pooled_k) / math.sqrt(dim) + sizes.log()
    logits = logits.masked_fill(~allowed[:, :, None], float("-inf"))
    return torch.softmax(logits, dim=-1).nan_to_num(0.0).mean(2)


def _select_by_mass(
    probs: torch.Tensor, forced: torch.Tensor, candidate: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Keep candidates, largest first, while forced + kept mass is below ``gamma`` (FlexPrefill-style)."""
    if gamma >= 1.0:
        return candidate
    forced_mass = (probs * forced).sum(-1, keepdim=True)
    ranked = torch.where(candidate, probs, -1.0)
    sorted_probs, order = ranked.sort(dim=-1, descending=True)
    sorted_probs = sorted_probs.clamp(min=0.0)
    mass_before = forced_mass + sorted_probs.cumsum(-1) - sorted_probs
    keep_sorted = mass_before < gamma
    keep = torch.zeros_like(candidate)
    keep.scatter_(-1, order, keep_sorted)
    return keep & candidate


def build_sparse_prefill_plan(
    query: torch.Tensor,
    keys: torch.Tensor,
    modality: torch.Tensor,
    frame_index: torch.Tensor,
    params: STSparseParams | None = None,
    *,
    values: torch.Tensor | None = None,
) -> SparsePrefillPlan:
    """Build the ST-SpAttn tile mask for one attention call (rules in the module docstring).

    Args:
        query: ``[B, H_q, L, D]`` (post-RoPE, as the attention sees them).
        keys: ``[B, H_kv, L, D]``; ``H_q`` must be a multiple of ``H_kv``.
        modality: ``int64[L]``: 0 text, 1 image, 2 video, 3 audio.
        frame_index: ``int64[L]``: frame of each video token, -1 elsewhere.
        params: mask hyperparameters.
        values: ``[B, H_kv, L, D]``, needed only for ``duplicate_source="values"``.

    Returns:
        A :class:`SparsePrefillPlan` with one mask per (batch, KV head).
    """
    params = params or STSparseParams()
    if query.dim() != 4 or keys.dim() != 4:
        raise ValueError("query and keys must be [B, H, L, D] tensors")
    batch, heads_q, seq_len, _ = query.shape
    heads_kv = keys.shape[1]
    if keys.shape[0] != batch or keys.shape[2:] != query.shape[2:] or heads_q % heads_kv:
        raise ValueError(f"keys shape {tuple(keys.shape)} is incompatible with query {tuple(query.shape)}")
    modality = modality.to(query.device).long()
    frame_index = frame_index.to(query.device).long()
    _validate_layout(modality, frame_index, seq_len)
    source = keys
    if params.duplicate_source == "values":
        if values is None:
            raise ValueError("values must be given when duplicate_source='values'")
        source = values
    layout = _tile_layout(modality, frame_index, params)
    duplicates = detect_duplicate_frames(source, layout.frame_ordinal, layout.num_frames, params.delta)
    skippable, representative = _duplicate_tiles(duplicates, layout, params, seq_len)
    num_blocks = layout.dense_query.shape[0]
    causal = torch.ones(num_blocks, num_blocks, dtype=torch.bool, device=query.device).tril()
    forced = (layout.dense_query[:, None] | layout.always_key[None, :] | layout.local) | (
        layout.video_query[:, None] & representative[:, :, None, :]
    )
    forced = forced.expand(batch, heads_kv, num_blocks, num_blocks) & causal
    allowed = causal & (forced | ~skippable[:, :, None, :])
    candidate = allowed & ~forced
    if params.gamma >= 1.0 or not bool(candidate.any()):
        kept = forced | candidate
    else:
        probs = _pooled_block_probs(query, keys, allowed, layout, params.block_size)
        kept = forced | _select_by_mass(probs, forced, candidate, params.gamma)
    return SparsePrefillPlan.from_block_mask(kept, params.block_size, seq_len, duplicates)


def st_sparse_attention_reference(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    plan: SparsePrefillPlan,
    *,
    scaling: float | None = None,
) -> torch.Tensor:
    """Dense attention with the plan's element mask: ``[B, H_q, L, D]`` (slow, for tests)."""
    return block_sparse_attention_reference(
        query, keys, values, plan.kv_num_blocks, plan.kv_indices, block_size=plan.block_size, scaling=scaling
    )


@functools.cache
def _compiled_flex_attention() -> Callable[..., torch.Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _causal_mask_mod(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
    """flex mask_mod of the partial (diagonal) tiles; module level so compiled graphs are reused."""
    return q_idx >= kv_idx


def _flex_block_mask(plan: SparsePrefillPlan, heads_q: int) -> Any:
    """The plan as a flex_attention ``BlockMask``: diagonal tiles partial (causal), the rest full."""
    from torch.nn.attention.flex_attention import BlockMask

    num_blocks = plan.num_blocks
    diagonal = torch.eye(num_blocks, dtype=torch.bool, device=plan.block_mask.device)
    group = heads_q // plan.block_mask.shape[1]
    block_ids = torch.arange(num_blocks, device=plan.block_mask.device)

    def as_lists(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = mask.repeat_interleave(group, dim=1)
        indices = torch.where(mask, block_ids, num_blocks).sort(dim=-1).values.clamp(max=num_blocks - 1)
        return mask.sum(-1, dtype=torch.int32), indices.to(torch.int32)

    partial_num, partial_idx = as_lists(plan.block_mask & diagonal)
    full_num, full_idx = as_lists(plan.block_mask & ~diagonal)
    return BlockMask.from_kv_blocks(
        partial_num,
        partial_idx,
        full_num,
        full_idx,
        BLOCK_SIZE=plan.block_size,
        mask_mod=_causal_mask_mod,
        seq_lengths=(plan.seq_len, plan.seq_len),
    )


def _flex_attention(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    plan: SparsePrefillPlan,
    scaling: float | None,
) -> torch.Tensor:
    block_mask = _flex_block_mask(plan, query.shape[1])
    gqa = query.shape[1] != keys.shape[1]
    return _compiled_flex_attention()(
        query, keys, values, block_mask=block_mask, scale=scaling, enable_gqa=gqa
    )


def st_sparse_attention(
    query: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    plan: SparsePrefillPlan,
    *,
    scaling: float | None = None,
    backend: Backend = "auto",
    max_density: float = 1.0,
) -> torch.Tensor:
    """Block-sparse causal attention over the plan's kept tiles (dense causal attention when the
    plan keeps more than ``max_density`` of the causal token pairs).

    Args:
        query: ``[B, H_q, L, D]``.
        keys, values: ``[B, H_kv, L, D]``.
        plan: from :func:`build_sparse_prefill_plan` (or :meth:`SparsePrefillPlan.from_block_mask`).
        scaling: softmax scale, default ``1/sqrt(D)``.
        backend: ``auto`` (Triton on CUDA, torch gather elsewhere), ``torch``, ``flex``, ``triton``,
            ``reference``.
        max_density: the dense fallback's threshold (:class:`STSparseParams`); 1.0 never falls back.

    Returns:
        ``[B, H_q, L, D]`` in the query dtype.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if query.shape[2] != plan.seq_len:
        raise ValueError(f"query length {query.shape[2]} does not match plan.seq_len {plan.seq_len}")
    if plan.token_density() > max_density:
        return torch.nn.functional.scaled_dot_product_attention(
            query, keys, values, is_causal=True, scale=scaling, enable_gqa=query.shape[1] != keys.shape[1]
        )
    if backend == "auto":
        backend = "triton" if query.is_cuda and _triton_block_ok(plan.block_size) else "torch"
    args = (query, keys, values, plan.kv_num_blocks, plan.kv_indices)
    options = {"block_size": plan.block_size, "scaling": scaling}
    if backend == "torch":
        return block_sparse_attention_torch(*args, **options)
    if backend == "triton":
        return block_sparse_attention_triton(*args, **options)
    if backend == "flex":
        return _flex_attention(query, keys, values, plan, scaling)
    return block_sparse_attention_reference(*args, **options)


def _triton_block_ok(block_size: int) -> bool:
    from trillium.kvcompress.kernels._triton import triton_available

    return triton_available() and block_size >= 16 and not block_size & (block_size - 1)


@dataclass
class SparsePrefillSession:
    """The layout and parameters active inside :func:`sparse_prefill`, plus what the prefill did.

    ``stats`` receives :meth:`SparsePrefillPlan.stats` of every sparse attention call (one per layer per
    prefill); ``plans`` keeps the plans themselves when ``keep_plans`` is True (tile masks cost
    ``5 * B * H_kv * (L / block_size)^2`` bytes per layer).
    """

    modality: torch.Tensor
    frame_index: torch.Tensor
    params: STSparseParams
    keep_plans: bool = True
    plans: list[SparsePrefillPlan] = field(default_factory=list)
    stats: list[dict[str, float]] = field(default_factory=list)

    @property
    def seq_len(self) -> int:
        return self.modality.shape[0]

    def record(self, plan: SparsePrefillPlan) -> None:
        self.stats.append(plan.stats(self.params.max_density))
        if self.keep_plans:
            self.plans.append(plan)


_ACTIVE_SESSION: ContextVar[SparsePrefillSession | None] = ContextVar(
    "trillium_st_sparse_session", default=None
)


def st_sparse_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """``transformers`` attention function: ST-SpAttn prefill inside :func:`sparse_prefill`, else SDPA.

    Falls back to SDPA when no session is active, for decode (``q_len == 1``), when the key length differs
    from the query length (a cache with earlier tokens), when the layout length differs, when the
    model passes an explicit mask (padding), for non-causal modules (vision encoders), with dropout, and
    for sliding-window or soft-capped layers (the plan models neither).
    Shapes follow transformers: ``query [B, H_q, L, D]``, ``key/value [B, H_kv, L, D]`` ->
    ``([B, L, H_q, D], None)``.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    session = _ACTIVE_SESSION.get()
    q_len = query.shape[2]
    use_sparse = (
        session is not None
        and q_len > 1
        and key.shape[2] == q_len == session.seq_len
        and attention_mask is None
        and getattr(module, "is_causal", True)
        and dropout == 0.0
        and kwargs.get("sliding_window") is None
        and kwargs.get("softcap") is None
    )
    if not use_sparse:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    plan = build_sparse_prefill_plan(
        query, key, session.modality, session.frame_index, session.params, values=value
    )
    session.record(plan)
    params = session.params
    out = st_sparse_attention(
        query, key, value, plan, scaling=scaling, backend=params.backend, max_density=params.max_density
    )
    return out.transpose(1, 2).contiguous(), None


def register_st_sparse_attention() -> str:
    """Register :func:`st_sparse_attention_forward` (and SDPA's mask builder) under :data:`ATTENTION_NAME`."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, st_sparse_attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    return ATTENTION_NAME


def _language_model_implementation(model: Any, implementation: str) -> str | dict[str, str]:
    """Target only the text decoder of a VLM; vision towers keep their own attention."""
    if "text_config" in getattr(model.config, "sub_configs", {}):
        return {"text_config": implementation}
    return implementation


def _current_language_implementation(model: Any) -> str:
    config = model.config
    if "text_config" in getattr(config, "sub_configs", {}):
        config = config.text_config
    return config._attn_implementation


@contextmanager
def sparse_prefill(
    model: Any,
    modality: torch.Tensor,
    frame_index: torch.Tensor,
    params: STSparseParams | None = None,
    *,
    keep_plans: bool = True,
) -> Iterator[SparsePrefillSession]:
    """Run a Hugging Face model's prefill with ST-SpAttn in its language decoder.

    Usage::

        with sparse_prefill(model, modality, frame_index, STSparseParams(gamma=0.9)) as session:
            out = model(input_ids=ids, past_key_values=cache)
        print(session.plans[0].stats())

    ``modality`` and ``frame_index`` are ``int64[L]`` for the prompt (shared by the batch); with a
    ``trillium.kvcompress.TokenLayout`` pass ``layout.modality`` and ``layout.frame``. On exit the
    model's previous attention implementation is restored. ``keep_plans=False`` keeps only per-call
    stats (see :class:`SparsePrefillSession`).
    """
    if modality.dim() != 1 or frame_index.shape != modality.shape:
        raise ValueError("modality and frame_index must be 1-D tensors of the same length")
    register_st_sparse_attention()
    previous = _current_language_implementation(model)
    session = SparsePrefillSession(
        modality.long(), frame_index.long(), params or STSparseParams(), keep_plans
    )
    model.set_attn_implementation(_language_model_implementation(model, ATTENTION_NAME))
    token = _ACTIVE_SESSION.set(session)
    try:
        yield session
    finally:
        _ACTIVE_SESSION.reset(token)
        model.set_attn_implementation(_language_model_implementation(model, previous))
