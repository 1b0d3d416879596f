"""Budgets per layer (uniform, PyramidKV), per head (AdaKV), per modality (MadaKV MPA, AccKV
focusing) and across layers (MadaKV HCC)."""

from trillium.kvcompress.budgets.hcc import hcc_demand, hcc_next_budget
from trillium.kvcompress.budgets.head import adaptive_head_selection
from trillium.kvcompress.budgets.layer import pyramid_layer_budgets, resolve_budget, validate_budget
from trillium.kvcompress.budgets.modality import focusing_weights, proportional_split

__all__ = [
    "adaptive_head_selection",
    "focusing_weights",
    "hcc_demand",
    "hcc_next_budget",
    "proportional_split",
    "pyramid_layer_budgets",
    "resolve_budget",
    "validate_budget",
]
