"""Slow, obviously-correct compositor: every pixel against every visible Gaussian, in depth order.

This is the oracle the fast renderers are held to. It follows gsplat 1.5.3's per-pixel rules
literally (3DGS, arXiv 2308.04079, as implemented in gsplat's RasterizeToPixels3DGSFwd):
pixel centre (x + 0.5, y + 0.5); ``sigma = 0.5 (a dx^2 + c dy^2) + b dx dy``;
``alpha = min(0.999, o exp(-sigma))``; skip when ``sigma < 0`` or ``alpha < 1/255``; stop a pixel
*before* the Gaussian that would bring its transmittance to <= 1e-4; background weighted by the
final transmittance. No tiles, no culling beyond the projection's ``radii > 0``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trillium.avatar.core.projection import ALPHA_THRESHOLD, ProjectedGaussians

MAX_ALPHA = 0.999
MIN_TRANSMITTANCE = 1e-4


def rasterize_reference(
    projected: ProjectedGaussians,
    colors: Tensor,
    width: int,
    height: int,
    background: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite projected Gaussians, one Gaussian at a time over all pixels.

    Args:
        projected: output of ``project_gaussians`` (N Gaussians).
        colors: [N, D] per-Gaussian colours (or any features).
        width, height: image size.
        background: [D] or None (black).

    Returns:
        (color [H, W, D], accumulated depth sum_i w_i z_i [H, W, 1], alpha [H, W, 1]).
    """
    dtype, device = colors.dtype, colors.device
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=dtype, device=device) + 0.5,
        torch.arange(width, dtype=dtype, device=device) + 0.5,
        indexing="ij",
    )
    transmittance = torch.ones(height, width, dtype=dtype, device=device)
    done = torch.zeros(height, width, dtype=torch.bool, device=device)
    color = torch.zeros(height, width, colors.shape[-1], dtype=dtype, device=device)
    depth = torch.zeros(height, width, dtype=dtype, device=device)

    visible = torch.nonzero(projected.visible).squeeze(-1)
    order = visible[torch.sort(projected.depths[visible], stable=True).indices]
    for i in order.tolist():
        a, b, c = projected.conics[i]
        dx = xs - projected.means2d[i, 0]
        dy = ys - projected.means2d[i, 1]
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = torch.clamp(projected.opacities[i] * torch.exp(-sigma), max=MAX_ALPHA)
        contributes = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD) & ~done
        next_t = transmittance * (1 - alpha)
        stops = contributes & (next_t <= MIN_TRANSMITTANCE)
        done = done | stops
        contributes = contributes & ~stops
        weight = torch.where(contributes, alpha * transmittance, torch.zeros_like(alpha))
        color = color + weight[..., None] * colors[i]
        depth = depth + weight * projected.depths[i]
        transmittance = torch.where(contributes, next_t, transmittance)
    if background is not None:
        color = color + transmittance[..., None] * background
    return color, depth[..., None], (1 - transmittance)[..., None]
