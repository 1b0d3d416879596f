"""Policy interface: a small dataclass with typed hyperparameters that compresses one layer at a time.

The Hugging Face integration calls :meth:`Policy.begin` once per prompt and then
:meth:`Policy.compress_layer` for every decoder layer, in order, right after that layer's prefill.
A policy returns, per KV head, the entries to keep (possibly merged): a ragged :class:`LayerResult`.
Cross-layer policies (PureKV, MadaKV's HCC) keep their running state in ``LayerInputs.state``.
"""

from __future__ import annotations

import math
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from trillium.kvcompress.budgets.layer import resolve_budget, validate_budget
from trillium.kvcompress.layout import Modality, TokenLayout
from trillium.kvcompress.scoring.window import gqa_mean, recompute_queries, rows_attention, window_indices

__all__ = [
    "LayerInputs",
    "LayerResult",
    "ObservationRows",
    "Policy",
    "PrefillAttention",
    "observation_rows",
    "param",
    "topk_with_forced",
    "window_rows",
]


def param(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field with the metadata the registry exposes (description, range, choices)."""
    meta = {
        "help": help,
        "minimum": minimum,
        "maximum": maximum,
        "exclusive_minimum": exclusive_minimum,
        "choices": choices,
    }
    return field(default=default, metadata=meta)


def _check_value(name: str, kind: Any, value: Any, meta: typing.Mapping[str, Any]) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a bool, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ValueError(f"{name} must be a float, got {value!r}")
        value = float(value)
    elif kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a str, got {value!r}")
        if meta.get("choices") and value not in meta["choices"]:
            raise ValueError(f"{name} must be one of {list(meta['choices'])}, got {value!r}")
        return value
    low, high = meta.get("minimum"), meta.get("maximum")
    if low is not None and (value < low or (meta.get("exclusive_minimum") and value == low)):
        bound = ">" if meta.get("exclusive_minimum") else ">="
        raise ValueError(f"{name} must be {bound} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


class PrefillAttention(Protocol):
    """Replacement for dense causal attention during prefill (e.g. a sparse spatial-temporal mask).

    ``query`` ``[B, H_q, L, D]``, ``key``/``value`` ``[B, H_kv, L, D]`` (post-RoPE) ->
    output ``[B, L, H_q, D]`` (transformers' attention-interface convention).
    """

    def __call__(
        self,
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        *,
        layout: TokenLayout,
        scaling: float,
    ) -> torch.Tensor: ...


@dataclass
class LayerInputs:
    """Everything a policy may read for one decoder layer (batch size 1).

    Attributes:
        layer_idx, num_layers: position of the layer.
        keys: ``[H_kv, L, D]`` cached post-RoPE keys.
        values: ``[H_kv, L, D_v]`` cached values.
        layout: the prompt's :class:`TokenLayout` (``L`` tokens).
        attention: the layer's attention module (``q_proj``, ``scaling``...), for query recompute.
        hidden_states: ``[1, L, hidden]`` attention input, for query recompute.
        position_embeddings: ``(cos, sin)`` ``[1, L, D]``.
        attention_weights: ``[H_q, L, L]`` eager attention (only if the policy asked for it).
        state: dict shared by all layers of one prompt (cross-layer policies).
        queries: ``[H_q, P, D]`` post-RoPE queries of the prompt rows ``query_rows`` (``[P]``
            sorted; None = every row), when the caller kept them: the serving engine keeps the rows
            of :meth:`Policy.scored_rows` during a chunked prefill, where ``hidden_states`` of
            earlier chunks are gone. Scoring then reads them instead of recomputing.
        query_rows: the rows ``queries`` holds (None: all ``L``).
        accumulated_attention: ``[H_q, L]`` attention each key received, summed over every prompt
            query (H2O's score), when the caller accumulated it chunk by chunk instead of passing
            ``attention_weights``.
    """

    layer_idx: int
    num_layers: int
    keys: torch.Tensor
    values: torch.Tensor
    layout: TokenLayout
    attention: nn.Module | None = None
    hidden_states: torch.Tensor | None = None
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None
    attention_weights: torch.Tensor | None = None
    state: dict[str, Any] = field(default_factory=dict)
    queries: torch.Tensor | None = None
    query_rows: torch.Tensor | None = None
    accumulated_attention: torch.Tensor | None = None
    _rows_cache: dict[tuple[int, ...], torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def num_kv_heads(self) -> int:
        return self.keys.shape[0]

    @property
    def length(self) -> int:
        return self.keys.shape[1]

    @property
    def num_query_heads(self) -> int:
        if self.queries is not None:
            return self.queries.shape[0]
        if self.attention is None:
            return self.num_kv_heads
        return self.attention.q_proj.out_features // self.attention.head_dim

    @torch.no_grad()
    def row_queries(self, rows: torch.Tensor) -> torch.Tensor:
        """``[1, H_q, P, D]`` post-RoPE queries of the prompt rows ``rows`` (kept or recomputed)."""
        if self.queries is not None:
            rows = rows.to(self.queries.device)
            if self.query_rows is None:
                return self.queries[:, rows].unsqueeze(0)
            kept = self.query_rows.to(rows.device)
            where = torch.searchsorted(kept, rows).clamp_max(max(kept.numel() - 1, 0))
            if kept.numel() == 0 or not bool((kept[where] == rows).all()):
                raise ValueError("a scored row's query was not kept: the policy's scored_rows() misses it")
            return self.queries[:, where].unsqueeze(0)
        if self.attention is None or self.hidden_states is None or self.position_embeddings is None:
            raise ValueError(
                "queries, or attention, hidden_states and position_embeddings, are needed to score rows"
            )
        return recompute_queries(self.attention, self.hidden_states, self.position_embeddings, rows)

    @property
    def scaling(self) -> float:
        """The attention module's softmax scale (``D ** -0.5`` without a module)."""
        if self.attention is not None:
            return float(self.attention.scaling)
        return self.keys.shape[-1] ** -0.5

    @torch.no_grad()
    def attention_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """``[H_q, P, L]`` causal attention probabilities of the prompt rows ``rows`` (recomputed)."""
        key = tuple(rows.tolist())
        if key not in self._rows_cache:
            queries = self.row_queries(rows)
            probs = rows_attention(queries, self.keys.unsqueeze(0), rows, self.scaling)
            self._rows_cache[key] = probs[0]
        return self._rows_cache[key]

    def window_scores(self, rows: torch.Tensor) -> torch.Tensor:
        """``[H_kv, L]``: attention mass each key receives from ``rows``, averaged per GQA group."""
        probs = self.attention_rows(rows)
        return gqa_mean(probs.sum(dim=1).unsqueeze(0), self.num_kv_heads)[0]


@dataclass
class LayerResult:
    """Per-KV-head kept entries of one layer (ragged).

    Attributes:
        keys: ``H_kv`` tensors ``[n_h, D]``.
        values: ``H_kv`` tensors ``[n_h, D_v]``.
        sources: ``H_kv`` int64 tensors ``[n_h]``: prompt index of each entry (for a merged
            unit token, the first prompt index it averages).
        merged: ``H_kv`` int64 tensors ``[n_h]``: evicted tokens folded into each entry.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    sources: list[torch.Tensor]
    merged: list[torch.Tensor]

    @classmethod
    def select(
        cls, keys: torch.Tensor, values: torch.Tensor, indices: list[torch.Tensor] | torch.Tensor
    ) -> LayerResult:
        """Keep ``indices[h]`` (sorted int64) of every head of ``keys``/``values`` ``[H_kv, L, D]``."""
        rows = [indices[h] for h in range(keys.shape[0])]
        return cls(
            keys=[keys[h, idx] for h, idx in enumerate(rows)],
            values=[values[h, idx] for h, idx in enumerate(rows)],
            sources=[idx.clone() for idx in rows],
            merged=[torch.zeros(idx.numel(), dtype=torch.long) for idx in rows],
        )

    def counts(self) -> list[int]:
        return [k.shape[0] for k in self.keys]


def topk_with_forced(scores: torch.Tensor, n_keep: int, forced: torch.Tensor | None = None) -> torch.Tensor:
    """``[H, n]`` sorted indices: the ``forced`` tokens (``[L]`` bool) first, then the top scores.

    If more tokens are forced than ``n_keep``, the last forced ones (most recent) are kept.
    """
    length = scores.shape[-1]
    n_keep = min(n_keep, length)
    work = scores.float().clone()
    if forced is not None and bool(forced.any()):
        rank = torch.cumsum(forced.long(), 0).float()  # later forced tokens rank higher
        work[:, forced] = float("inf")
        work = torch.where(torch.isinf(work), 1e30 + rank.unsqueeze(0) * 1e25, work)
    return work.topk(n_keep, dim=-1).indices.sort(dim=-1).values


@dataclass(frozen=True)
class ObservationRows:
    """The prompt rows whose queries score a layer's keys, and the rows always kept.

    Attributes:
        rows: ``[P]`` sorted prompt indices of the scoring queries.
        forced: ``[L]`` bool, tokens every window policy keeps whatever their score: the trailing
            window (SnapKV keeps its observation window).
        spread: True when strided rows over the prompt were added (question-agnostic), False for
            a trailing question window alone.
    """

    rows: torch.Tensor
    forced: torch.Tensor
    spread: bool


def observation_rows(layout: TokenLayout, window: int) -> ObservationRows:
    """The shared observation window of every window-scored policy (SnapKV and its family, PyramidKV,
    AdaKV, LOOK-M, PureKV, MadaKV, FlowMM, AccKV).

    * **Question-aware** (the prompt ends in a text segment: the question, or a text document's last
      part): the last ``min(window, len(segment))`` tokens of that segment, as SnapKV's window, and
      they are kept. A short question does not reach back into the media before it.
    * **Question-agnostic** (the prompt ends in a media segment, e.g. a context compressed before its
      question arrives, whose last token is the segment's closing marker): the last ``window``
      tokens (kept, as SnapKV keeps its window) **plus** ``window`` rows spread evenly over the whole
      prompt. The trailing window alone is the end of the audio clip, whose queries look mostly at
      their own neighbourhood, so the text and video a later question asks about lose their votes;
      the strided rows are a sample of the queries H2O sums over (every row), at ``window / L`` of
      its cost, and they reach every segment longer than the stride ``L / window``.

    Our design choice; the papers score with the trailing prompt tokens and do not treat prompts that
    end in media. Measured on av-tiny's validation split (80 questions, 20% budget, protocol A),
    overall accuracy, trailing window -> strided rows alone -> trailing + strided: SnapKV 58.8 ->
    38.8 -> 70.0, MadaKV 86.2 -> 47.5 -> 90.0, PureKV 80.0 -> 38.8 -> 87.5 (strided rows alone
    lose the audio, whose keys only its own late rows see).
    """
    length = len(layout)
    forced = torch.zeros(length, dtype=torch.bool)
    if length == 0:
        return ObservationRows(torch.zeros(0, dtype=torch.long), forced, spread=False)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    trailing = _trailing_text_segment(layout)
    if trailing:
        rows = window_indices(length, min(window, trailing))
        forced[rows] = True
        return ObservationRows(rows, forced, spread=False)
    trail = window_indices(length, min(window, length))
    count = min(window, length)
    spread = torch.linspace(length / count - 1, length - 1, count).round().long()
    forced[trail] = True
    rows = torch.cat([trail, spread]).unique()
    return ObservationRows(rows, forced, spread=True)


def _trailing_text_segment(layout: TokenLayout) -> int:
    """Length of the prompt's last segment if it is all text, else 0."""
    same_segment = (layout.segment == layout.segment[-1]).flip(0)
    last_segment = int(torch.cumprod(same_segment.long(), 0).sum())
    text = bool(layout.mask(Modality.TEXT)[len(layout) - last_segment :].all())
    return last_segment if text else 0


def window_rows(layout: TokenLayout, window: int) -> torch.Tensor:
    """``[P]`` the rows of :func:`observation_rows` (what a window policy's ``scored_rows`` returns)."""
    return observation_rows(layout, window).rows


@dataclass
class Policy(ABC):
    """Base class of compression policies.

    Subclasses set ``name``, declare hyperparameters with :func:`param` and implement
    :meth:`compress_layer`.
    """

    budget: float | int = param(0.2, "fraction of prompt tokens kept in (0, 1], or a token count >= 1")

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs_attention_weights: ClassVar[bool] = False
    required_modalities: ClassVar[tuple[Modality, ...]] = ()
    needs_non_text: ClassVar[bool] = False
    text_only_form: ClassVar[bool] = False
    """A modality-aware policy with a documented text-only form accepts all-text prompts too."""

    def __post_init__(self) -> None:
        validate_budget(self.budget)
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            if f.name == "budget" or not f.metadata:
                continue
            setattr(self, f.name, _check_value(f.name, hints[f.name], getattr(self, f.name), f.metadata))

    @property
    def prefill_attention(self) -> PrefillAttention | None:
        """A replacement prefill attention, if the policy has one (see :class:`ComposedPolicy`)."""
        return None

    def begin(self, layout: TokenLayout, num_layers: int) -> None:
        """Validate the layout before a prompt is compressed (modality-aware policies check it)."""
        if self.text_only_form and layout.modalities() <= {Modality.TEXT}:
            return
        if self.required_modalities:
            layout.require(self.required_modalities, argument="layout", by=self.name)
        if self.needs_non_text and not layout.modalities() - {Modality.TEXT}:
            raise ValueError(f"layout has no image, video or audio tokens (required by {self.name})")

    def tokens_to_keep(self, length: int) -> int:
        return resolve_budget(self.budget, length)

    def scored_rows(self, layout: TokenLayout) -> torch.Tensor | None:
        """Sorted prompt rows ``[P]`` whose queries :meth:`compress_layer` reads (None: any row).

        A chunked prefill (the serving engine) keeps only these rows' queries until the prompt's
        last chunk; a policy whose rows are missing fails loudly (:meth:`LayerInputs.row_queries`).
        """
        return None

    @abstractmethod
    def compress_layer(self, inputs: LayerInputs) -> LayerResult:
        """Compress one layer; see :class:`LayerInputs` and :class:`LayerResult`."""
