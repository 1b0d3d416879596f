"""Composition: a prefill attention (e.g. PureKV's spatial-temporal sparse prefill) + an eviction
policy. The prefill attention replaces dense causal attention while the prompt is processed; the
base policy then compresses the resulting cache as usual."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from trillium.kvcompress.layout import TokenLayout
from trillium.kvcompress.policies.base import LayerInputs, LayerResult, Policy, PrefillAttention

__all__ = ["ComposedPolicy"]


@dataclass
class ComposedPolicy(Policy):
    """``base`` compresses; ``prefill`` (a :class:`PrefillAttention`) runs the prefill attention.

    The budget is the base policy's."""

    base: Policy | None = field(default=None)
    prefill: PrefillAttention | None = field(default=None)

    name: ClassVar[str] = "composed"
    summary: ClassVar[str] = "a prefill attention (e.g. sparse) composed with an eviction policy"

    def __post_init__(self) -> None:
        if not isinstance(self.base, Policy):
            raise ValueError(f"base must be a Policy, got {type(self.base).__name__}")
        if self.prefill is not None and not callable(self.prefill):
            raise ValueError("prefill must be callable (a PrefillAttention)")
        self.budget = self.base.budget
        super().__post_init__()

    @property
    def needs_attention_weights(self) -> bool:  # type: ignore[override]
        return self.base.needs_attention_weights

    @property
    def prefill_attention(self) -> PrefillAttention | None:
        return self.prefill

    def begin(self, layout: TokenLayout, num_layers: int) -> None:
        self.base.begin(layout, num_layers)

    def scored_rows(self, layout: TokenLayout) -> torch.Tensor | None:
        return self.base.scored_rows(layout)

    def compress_layer(self, inputs: LayerInputs) -> LayerResult:
        return self.base.compress_layer(inputs)
