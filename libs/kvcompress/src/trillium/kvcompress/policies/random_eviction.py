"""Random eviction: keep a uniformly random subset of the prompt — the floor any policy must beat.

Not a paper's method but the control every KV-compression benchmark reports (kvpress ships it as
``RandomPress``). Our choices: one subset per prompt, the same tokens in every layer and KV head (so
the kept set is what "random" means for the whole cache, not an average over heads), drawn from a
generator seeded by ``(seed, prompt length)``: the same request always keeps the same entries, like
every other policy, and prompts of different lengths get independent draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from trillium.kvcompress.layout import TokenLayout
from trillium.kvcompress.policies.base import LayerInputs, LayerResult, Policy, param

__all__ = ["RandomEviction"]


@dataclass
class RandomEviction(Policy):
    seed: int = param(0, "seed of the generator the kept subsets are drawn from", minimum=0)

    name: ClassVar[str] = "random"
    summary: ClassVar[str] = "uniformly random eviction, the same tokens in every layer (the floor)"

    _kept: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)
    _length: int = field(default=-1, init=False, repr=False, compare=False)

    def begin(self, layout: TokenLayout, num_layers: int) -> None:
        """Draw this prompt's kept subset: ``tokens_to_keep(L)`` indices of ``[0, L)``, sorted."""
        super().begin(layout, num_layers)
        if self._kept is not None and self._length == len(layout):
            return  # the draw depends on (seed, length) only; compress() validates before its session begins
        length = self._length = len(layout)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + length)
        order = torch.randperm(length, generator=generator)
        self._kept = order[: self.tokens_to_keep(length)].sort().values

    def scored_rows(self, layout: TokenLayout) -> torch.Tensor:
        return torch.zeros(0, dtype=torch.long)  # scores without queries

    def compress_layer(self, inputs: LayerInputs) -> LayerResult:
        if self._kept is None or self._length != inputs.length:
            raise ValueError("layout: begin() must be called with this prompt's layout before compress_layer")
        kept = self._kept.expand(inputs.num_kv_heads, -1)
        return LayerResult.select(inputs.keys, inputs.values, kept)
