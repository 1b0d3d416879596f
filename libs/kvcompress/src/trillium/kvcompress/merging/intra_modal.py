"""AccKV intra-modal merging and cross-modal calibration (arXiv 2511.11106; as summarised by a
secondary source).

* Intra-modal merge: per modality, the tokens not kept are averaged into merged KV; we build one
  averaged token per video frame and per ``audio_steps_per_unit`` audio steps (our design choice).
  Units never span modalities, so audio is never merged with video.
* Cross-calibration: a low-priority token ``i`` survives only if
  ``c_i = mean_j cos(k_i, k_j^{high}) >= tau`` over all high-priority keys ``j``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["average_units", "cross_calibration_scores"]


def average_units(
    keys: torch.Tensor, values: torch.Tensor, token_index: torch.Tensor, unit_of_token: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Average the tokens ``token_index`` ``[m]`` grouped by ``unit_of_token`` ``[m]``.

    Args:
        keys, values: ``[L, D]``, ``[L, D_v]`` of one KV head.
        token_index: prompt indices of the tokens to merge.
        unit_of_token: unit id of each of them.

    Returns:
        merged keys ``[u, D]``, values ``[u, D_v]``, and ``[u]`` the first prompt index of each unit.
    """
    if token_index.numel() == 0:
        return keys[:0], values[:0], token_index[:0]
    units, inverse = torch.unique(unit_of_token, return_inverse=True)
    u = units.numel()
    counts = torch.bincount(inverse, minlength=u).unsqueeze(1).float()
    k = torch.zeros(u, keys.shape[1]).index_add_(0, inverse, keys[token_index].float()) / counts
    v = torch.zeros(u, values.shape[1]).index_add_(0, inverse, values[token_index].float()) / counts
    first = torch.full((u,), torch.iinfo(torch.long).max, dtype=torch.long)
    first = first.scatter_reduce(0, inverse, token_index, reduce="amin")
    return k.to(keys.dtype), v.to(values.dtype), first


def cross_calibration_scores(low_keys: torch.Tensor, high_keys: torch.Tensor) -> torch.Tensor:
    """``c_i = mean_j cos(k_i, k_j)``: ``low_keys`` ``[n, D]``, ``high_keys`` ``[m, D]`` -> ``[n]``
    (zeros if there is no high-priority key)."""
    if high_keys.shape[0] == 0:
        return torch.zeros(low_keys.shape[0])
    return (F.normalize(low_keys.float(), dim=-1) @ F.normalize(high_keys.float(), dim=-1).T).mean(dim=1)
