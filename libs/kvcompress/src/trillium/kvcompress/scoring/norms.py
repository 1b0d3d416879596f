"""Attention-free scores: key norm (Knorm, arXiv 2406.11430: low-norm keys attract attention, so the
score is ``-||k||``) and value norm ``||v||`` (PureKV's deep-layer factor)."""

from __future__ import annotations

import torch

__all__ = ["key_norm_scores", "value_norm_scores"]


def key_norm_scores(keys: torch.Tensor) -> torch.Tensor:
    """``keys`` ``[B, H_kv, L, D]`` -> ``[B, H_kv, L]`` = ``-||k||_2`` (higher = keep)."""
    return -keys.float().norm(dim=-1)


def value_norm_scores(values: torch.Tensor) -> torch.Tensor:
    """``values`` ``[B, H_kv, L, D]`` -> ``[B, H_kv, L]`` = ``||v||_2``."""
    return values.float().norm(dim=-1)
