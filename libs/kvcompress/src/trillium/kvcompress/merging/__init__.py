"""KV merging: LOOK-M pivot merge, FlowMM flow gate and sensitivity matching, AccKV intra-modal
merge and cross-calibration."""

from trillium.kvcompress.merging.flow import (
    flow_eligibility,
    matching,
    protection_threshold,
    weighted_merge,
)
from trillium.kvcompress.merging.intra_modal import average_units, cross_calibration_scores
from trillium.kvcompress.merging.pivot import merge_into_pivots, nearest_pivots

__all__ = [
    "average_units",
    "cross_calibration_scores",
    "flow_eligibility",
    "matching",
    "merge_into_pivots",
    "nearest_pivots",
    "protection_threshold",
    "weighted_merge",
]
