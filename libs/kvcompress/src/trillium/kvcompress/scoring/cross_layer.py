"""PureKV cross-layer importance estimation, CLIE (arXiv 2510.25600).

The importance of token ``j`` at a deep layer is estimated from a lower layer's accumulated attention
weighted by the deep layer's value norm: ``s_j^{(hi)} = A_j^{(lo)} * ||v_j^{(hi)}||_2`` (as summarised
by a secondary source; the method body is not public), so deep layers need no attention matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trillium.kvcompress.scoring.norms import value_norm_scores

__all__ = ["choose_scoring_layer", "cross_layer_importance", "spearman_correlation"]


def cross_layer_importance(low_layer_scores: torch.Tensor, high_layer_values: torch.Tensor) -> torch.Tensor:
    """``low_layer_scores`` ``[B, H_kv, L]`` x ``||v||`` of ``high_layer_values`` ``[B, H_kv, L, D]``."""
    if low_layer_scores.shape != high_layer_values.shape[:-1]:
        raise ValueError(
            f"low_layer_scores {tuple(low_layer_scores.shape)} does not match "
            f"high_layer_values {tuple(high_layer_values.shape[:-1])}"
        )
    return low_layer_scores.float() * value_norm_scores(high_layer_values)


def spearman_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two score tensors of the same shape (flattened; ties by order)."""
    if a.shape != b.shape:
        raise ValueError(f"a {tuple(a.shape)} and b {tuple(b.shape)} must have the same shape")
    ranks_a = a.flatten().float().argsort().argsort().float()
    ranks_b = b.flatten().float().argsort().argsort().float()
    ranks_a, ranks_b = ranks_a - ranks_a.mean(), ranks_b - ranks_b.mean()
    denom = (ranks_a.norm() * ranks_b.norm()).clamp_min(1e-12)
    return float((ranks_a * ranks_b).sum() / denom)


def choose_scoring_layer(prompt_layer_scores: Sequence[Sequence[torch.Tensor]]) -> int:
    """PureKV calibration (our design choice): the layer ``l_s`` whose own window scores best predict
    the deeper layers' rankings, i.e. maximising the mean Spearman correlation with every deeper
    layer, averaged over calibration prompts.

    Args:
        prompt_layer_scores: per calibration prompt, per layer, the layer's own scores (any shape,
            e.g. ``[H_kv, L]``; same shape across layers of one prompt).

    Returns:
        The 0-based scoring layer (never the last layer).
    """
    if not prompt_layer_scores or len(prompt_layer_scores[0]) < 2:
        raise ValueError("prompt_layer_scores needs at least one prompt with at least two layers")
    num_layers = len(prompt_layer_scores[0])
    means = []
    for low in range(num_layers - 1):
        values = [
            spearman_correlation(layers[low], layers[high])
            for layers in prompt_layer_scores
            for high in range(low + 1, num_layers)
        ]
        means.append(sum(values) / len(values))
    return max(range(num_layers - 1), key=lambda layer: means[layer])
