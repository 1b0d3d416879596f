"""FedCFA's functional core (arXiv 2412.18904): factor saliency, masks, counterfactuals, FDC, mean data.

Shapes: ``z: [B, C, *S]`` latent factors (``S`` = spatial dims, empty for MLPs), ``s: [B, C]``
saliency, masks ``[B, C]``, labels ``y: [B]``, soft labels ``[B, num_classes]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def factor_saliency(decoder: nn.Module, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``s[b, c] = mean_{spatial} ∂/∂z [(1/B) Σ_b logit_{y_b}(decoder(z))]`` — signed, no absolute value.

    ``decoder`` is the frozen global model's decoder; ``z`` is detached from the local graph.
    """
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = decoder(z)
        target = logits.gather(1, y[:, None]).mean()
        (grad,) = torch.autograd.grad(target, z)
    return grad.flatten(2).mean(dim=2) if grad.dim() > 2 else grad


def factor_masks(saliency: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m_p, m_n)``, each ``[B, C]`` of 0/1.

    ``m_p`` zeroes the ``top_k`` *least* salient channels (non-critical factors get replaced, the
    positive counterfactual keeps the class); ``m_n`` zeroes the ``top_k`` *most* salient ones.
    """
    channels = saliency.shape[1]
    if not 0 < top_k < channels:
        raise ValueError(f"top_k must be in (0, {channels}), got {top_k}")
    smallest = saliency.topk(top_k, dim=1, largest=False).indices
    largest = saliency.topk(top_k, dim=1, largest=True).indices
    m_p = torch.ones_like(saliency).scatter_(1, smallest, 0.0)
    m_n = torch.ones_like(saliency).scatter_(1, largest, 0.0)
    return m_p, m_n


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.reshape(mask.shape + (1,) * (like.dim() - 2))


def counterfactual_latents(
    z: torch.Tensor,
    z_global: torch.Tensor,
    m_p: torch.Tensor,
    m_n: torch.Tensor,
    *,
    y_onehot: torch.Tensor,
    y_global: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(z_p, z_n, ȳ_n)``.

    ``z_p = m_p ⊙ z + (1 − m_p) ⊙ z_g`` (target y); ``z_n = m_n ⊙ z + (1 − m_n) ⊙ z_g`` with soft target
    ``ȳ_n = mean_c(m_n)·onehot(y) + mean_c(1 − m_n)·y_g`` (0.625·y + 0.375·y_g for 24 of 64 channels).
    """
    mp, mn = _expand(m_p, z), _expand(m_n, z)
    z_p = mp * z + (1 - mp) * z_global
    z_n = mn * z + (1 - mn) * z_global
    keep = m_n.mean(dim=1, keepdim=True)  # [B, 1]
    y_n = keep * y_onehot + (1 - keep) * y_global
    return z_p, z_n, y_n


def fdc_loss(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Factor-decorrelation loss — OUR DESIGN: the paper names FDC but its formula is not public.

    ``f = mean_spatial z: [B, C]``; standardise each channel over the batch; ``R = f̂ᵀf̂ / B``;
    ``L = Σ_{i≠j} R_ij² / (C(C − 1))``. Zero when ``B < 2`` (no correlation to estimate).
    """
    f = z.flatten(2).mean(dim=2) if z.dim() > 2 else z
    batch, channels = f.shape
    if batch < 2 or channels < 2:
        return z.sum() * 0.0
    f_hat = (f - f.mean(dim=0)) / (f.std(dim=0, unbiased=False) + eps)
    corr = f_hat.T @ f_hat / batch
    off_diagonal = corr - torch.diag(torch.diagonal(corr))
    return off_diagonal.pow(2).sum() / (channels * (channels - 1))


def chunk_means(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    chunk_size: int,
    *,
    generator: torch.Generator | None = None,
    noise_std: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FedMix-style mean data (Yoon et al. 2021, arXiv 2107.00233): shuffle, cut into chunks of
    ``chunk_size`` (the last may be smaller), return per-chunk mean inputs ``[M, ...]`` and mean one-hot
    labels ``[M, num_classes]``; optional Gaussian noise ``σ = noise_std`` on the mean inputs."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    order = torch.randperm(len(y), generator=generator)
    onehot = F.one_hot(y, num_classes).to(x.dtype)
    means_x, means_y = [], []
    for chunk in order.split(chunk_size):
        means_x.append(x[chunk].mean(dim=0))
        means_y.append(onehot[chunk].mean(dim=0))
    mean_x = torch.stack(means_x)
    if noise_std > 0:
        mean_x = mean_x + noise_std * torch.randn(mean_x.shape, generator=generator)
    return mean_x, torch.stack(means_y)
