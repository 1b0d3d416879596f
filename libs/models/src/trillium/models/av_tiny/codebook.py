"""k-means codebooks that turn continuous patch / log-mel features into discrete tokens.

Lloyd's algorithm (Lloyd 1982, "Least squares quantization in PCM") with k-means++ seeding
(Arthur & Vassilvitskii 2007), in torch. Discrete codes let the decoder be a plain causal LM over
``input_ids``, so KV-cache methods written for text models apply unchanged.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


def _squared_distances(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """``[N, K]`` squared Euclidean distances between ``points [N, D]`` and ``centroids [K, D]``."""
    return (
        points.pow(2).sum(1, keepdim=True) - 2 * points @ centroids.T + centroids.pow(2).sum(1)
    ).clamp_min(0)


def kmeans_plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: ``k`` initial centroids ``[k, D]`` drawn from ``points [N, D]``."""
    first = int(torch.randint(points.shape[0], (1,), generator=generator))
    centroids = [points[first]]
    nearest = _squared_distances(points, points[first : first + 1]).squeeze(1)
    for _ in range(1, k):
        if float(nearest.sum()) <= 0:
            index = int(torch.randint(points.shape[0], (1,), generator=generator))
        else:
            index = int(torch.multinomial(nearest / nearest.sum(), 1, generator=generator))
        centroids.append(points[index])
        nearest = torch.minimum(nearest, _squared_distances(points, points[index : index + 1]).squeeze(1))
    return torch.stack(centroids)


def fit_kmeans(
    points: torch.Tensor, k: int, *, iterations: int = 30, seed: int = 0, progress: bool = False
) -> torch.Tensor:
    """Centroids ``[k, D]`` of ``points [N, D]`` (float32) after k-means++ seeding and Lloyd iterations."""
    if points.ndim != 2 or points.shape[0] < k:
        raise ValueError(f"points must be [N, D] with N >= k={k}, got {tuple(points.shape)}")
    points = points.float()
    generator = torch.Generator().manual_seed(seed)
    centroids = kmeans_plus_plus(points, k, generator)
    for _ in tqdm(range(iterations), desc="k-means", disable=not progress, leave=False):
        assign = assign_codes(points, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
    return centroids


def assign_codes(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index ``[N]`` of the nearest centroid for each of ``points [N, D]``."""
    return _squared_distances(points.float(), centroids).argmin(dim=1)


def assign_codes_reference(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Slow, obvious reference of :func:`assign_codes` (one point at a time)."""
    return torch.stack([((centroids - p) ** 2).sum(1).argmin() for p in points.float()])
