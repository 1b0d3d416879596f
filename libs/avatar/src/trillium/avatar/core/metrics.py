"""Offline avatar metrics: PSNR, SSIM (Wang et al. 2004), lip-sync correlation, lip vertex error.

- PSNR: ``10 log10(range^2 / MSE)``.
- SSIM: Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03, "valid" filtering, mean over the map
  and channels (the standard definition of Wang et al., IEEE TIP 2004).
- Lip-sync correlation: Pearson correlation of a predicted and a target mouth-coefficient track
  (e.g. jawOpen over time); ``best_lag_correlation`` also searches the lag (an AV-offset proxy).
- Lip vertex error (LVE, as in FaceFormer, arXiv 2112.05329, and the GaussianTalker family): per frame
  the maximum L2 distance over lip vertices, averaged over frames. We use the plain L2 distance,
  not its square (FaceFormer reports the squared form); say which when comparing numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def psnr(prediction: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """PSNR in dB over all elements. prediction, target: same shape (e.g. [H, W, 3])."""
    _check_same_shape(prediction, target)
    mse = torch.mean((prediction.double() - target.double()) ** 2)
    return (10 * torch.log10(data_range**2 / mse)).to(prediction.dtype)


def ssim(
    prediction: Tensor,
    target: Tensor,
    data_range: float = 1.0,
    *,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> Tensor:
    """Mean SSIM.

    Args:
        prediction, target: [H, W, C] or [B, H, W, C] images with H, W >= window_size.

    Returns:
        scalar mean SSIM over batch, channels and valid window positions.
    """
    _check_same_shape(prediction, target)
    if prediction.ndim == 3:
        prediction, target = prediction[None], target[None]
    if prediction.ndim != 4:
        raise ValueError(f"prediction must be [H, W, C] or [B, H, W, C], got {tuple(prediction.shape)}")
    if min(prediction.shape[1:3]) < window_size:
        raise ValueError(f"images must be at least {window_size} pixels on each side")
    x = prediction.permute(0, 3, 1, 2).double()
    y = target.permute(0, 3, 1, 2).double()
    channels = x.shape[1]
    coords = torch.arange(window_size, dtype=torch.float64) - (window_size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).expand(channels, 1, window_size, window_size)

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(z, window, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean().to(prediction.dtype)


def lip_sync_correlation(predicted: Tensor, target: Tensor) -> Tensor:
    """Pearson correlation of two mouth-coefficient tracks [T] (T >= 2, both non-constant)."""
    _check_same_shape(predicted, target)
    if predicted.ndim != 1 or predicted.shape[0] < 2:
        raise ValueError(
            f"predicted must be a 1-D track with at least 2 frames, got {tuple(predicted.shape)}"
        )
    p = predicted.double() - predicted.double().mean()
    t = target.double() - target.double().mean()
    denominator = p.norm() * t.norm()
    if float(denominator) == 0.0:
        raise ValueError("correlation is undefined for a constant track")
    return ((p * t).sum() / denominator).to(predicted.dtype)


def best_lag_correlation(predicted: Tensor, target: Tensor, max_lag: int) -> tuple[int, Tensor]:
    """Lag (frames; positive = prediction late) in [-max_lag, max_lag] with the highest Pearson r, and r."""
    if max_lag < 0 or max_lag >= predicted.shape[0] - 1:
        raise ValueError(f"max_lag must be in [0, T - 2], got {max_lag}")
    best_lag, best = 0, torch.tensor(-2.0)
    for lag in range(-max_lag, max_lag + 1):
        p = predicted[lag:] if lag >= 0 else predicted[:lag]
        t = target[: target.shape[0] - lag] if lag >= 0 else target[-lag:]
        r = lip_sync_correlation(p, t)
        if float(r) > float(best):
            best_lag, best = lag, r
    return best_lag, best


def lip_vertex_error(predicted: Tensor, target: Tensor, lip_vertex_ids: Tensor) -> Tensor:
    """LVE: mean over frames of the max L2 error over lip vertices.

    Args:
        predicted, target: [T, V, 3] vertex sequences.
        lip_vertex_ids: [L] long indices of lip vertices.
    """
    _check_same_shape(predicted, target)
    if predicted.ndim != 3 or predicted.shape[-1] != 3:
        raise ValueError(f"predicted must be [T, V, 3], got {tuple(predicted.shape)}")
    if lip_vertex_ids.numel() == 0:
        raise ValueError("lip_vertex_ids must not be empty")
    errors = (predicted[:, lip_vertex_ids] - target[:, lip_vertex_ids]).norm(dim=-1)
    return errors.max(dim=-1).values.mean()


def _check_same_shape(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"prediction and target shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
