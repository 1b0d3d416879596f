"""Adapter: PureKV's spatial-temporal sparse prefill (ST-SpAttn, arXiv 2510.25600) as a
:class:`~trillium.kvcompress.policies.base.PrefillAttention` for :class:`ComposedPolicy`.

The mask itself lives in :mod:`trillium.kvcompress.sparse_prefill`; this only feeds it the layout
(modality, video frame index) of the prompt being compressed::

    policy = ComposedPolicy(base=PureKV(budget=0.2), prefill=STSparsePrefill())
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trillium.kvcompress.layout import Modality, TokenLayout

__all__ = ["STSparsePrefill"]


@dataclass
class STSparsePrefill:
    """Run ST-SpAttn during prefill.

    Attributes:
        params: ``sparse_prefill.STSparseParams`` (None = its defaults).
        plans: the tile plan of every prefill attention call (one per layer), for inspection.
    """

    params: Any = None
    plans: list[Any] = field(default_factory=list)

    def __call__(
        self,
        module: nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        *,
        layout: TokenLayout,
        scaling: float,
    ) -> torch.Tensor:
        from trillium.kvcompress import sparse_prefill

        params = self.params or sparse_prefill.STSparseParams()
        frame = torch.where(layout.mask(Modality.VIDEO), layout.frame, -1)
        plan = sparse_prefill.build_sparse_prefill_plan(
            query, key, layout.modality, frame, params, values=value
        )
        self.plans.append(plan)
        out = sparse_prefill.st_sparse_attention(
            query, key, value, plan, scaling=scaling, backend=params.backend, max_density=params.max_density
        )
        return out.transpose(1, 2).contiguous()
