"""Token-importance scores: window attention recompute, accumulated attention (H2O), AccKV
redistribution, PureKV cross-layer importance, key/value norms, FlowMM's interaction ratio."""

from trillium.kvcompress.scoring.accumulated import accumulated_attention
from trillium.kvcompress.scoring.cross_layer import (
    choose_scoring_layer,
    cross_layer_importance,
    spearman_correlation,
)
from trillium.kvcompress.scoring.norms import key_norm_scores, value_norm_scores
from trillium.kvcompress.scoring.redistribution import (
    redistributed_scores_from_matrix,
    redistributed_scores_full,
    redistributed_scores_window,
)
from trillium.kvcompress.scoring.visual_queries import (
    interaction_ratio,
    sample_media_rows,
    sample_visual_rows,
)
from trillium.kvcompress.scoring.window import (
    gqa_mean,
    pool_scores,
    recompute_queries,
    rows_attention,
    window_indices,
)

__all__ = [
    "accumulated_attention",
    "choose_scoring_layer",
    "cross_layer_importance",
    "gqa_mean",
    "interaction_ratio",
    "key_norm_scores",
    "pool_scores",
    "recompute_queries",
    "redistributed_scores_from_matrix",
    "redistributed_scores_full",
    "redistributed_scores_window",
    "rows_attention",
    "sample_media_rows",
    "sample_visual_rows",
    "spearman_correlation",
    "value_norm_scores",
    "window_indices",
]
