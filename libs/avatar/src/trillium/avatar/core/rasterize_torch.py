"""Tiled, chunked, differentiable torch compositor with gsplat 1.5.3 semantics.

Gaussians are binned to 16x16 tiles (front to back per tile) and composited in chunks (default 16)
for *all busy tiles at once*: step k takes the k-th chunk of every tile's list, so one batch of
tensor ops covers the whole image. Inside a chunk the running transmittance is a cumulative
product of ``(1 - alpha)``; contributions are masked from the first Gaussian that would bring a
pixel's transmittance to <= 1e-4 (gsplat's exclusive stop). A tile retires as soon as every pixel
has stopped or its list is exhausted. Everything is plain torch, so autograd gives gradients for
fitting on any device and dtype (the stop / skip masks are piecewise constant, as in gsplat).
"""

from __future__ import annotations

import torch
from torch import Tensor

from trillium.avatar.core.projection import ALPHA_THRESHOLD, ProjectedGaussians
from trillium.avatar.core.rasterize_reference import MAX_ALPHA, MIN_TRANSMITTANCE
from trillium.avatar.core.tiling import TileBins, bin_gaussians


def rasterize_tiled_torch(
    projected: ProjectedGaussians,
    colors: Tensor,
    width: int,
    height: int,
    background: Tensor | None = None,
    *,
    tile_size: int = 16,
    chunk_size: int = 16,
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite projected Gaussians, all tiles in lock step.

    Args:
        projected: output of ``project_gaussians`` (N Gaussians).
        colors: [N, D] colours or features.
        width, height: image size.
        background: [D] or None (black).
        tile_size: tile edge in pixels.
        chunk_size: Gaussians per tile composited per vectorised step.

    Returns:
        (color [H, W, D], accumulated depth [H, W, 1], alpha [H, W, 1]), same as ``rasterize_reference``.
    """
    bins = bin_gaussians(projected, width, height, tile_size)
    feats = torch.cat([colors, projected.depths[:, None].to(colors.dtype)], dim=-1)
    n_tiles, n_pix = bins.tiles_x * bins.tiles_y, tile_size * tile_size
    base = torch.zeros(n_tiles, n_pix, feats.shape[-1] + 1, dtype=colors.dtype, device=colors.device)
    base[..., -1] = 1.0
    tile_ids, tile_rows = _composite_all_tiles(projected, feats, bins, chunk_size)
    tiles = base.index_put((tile_ids,), tile_rows) if tile_ids.numel() else base
    grid = tiles.reshape(bins.tiles_y, bins.tiles_x, tile_size, tile_size, -1)
    image = grid.permute(0, 2, 1, 3, 4).reshape(bins.tiles_y * tile_size, bins.tiles_x * tile_size, -1)
    image = image[:height, :width]
    color, depth, transmittance = image[..., :-2], image[..., -2:-1], image[..., -1:]
    if background is not None:
        color = color + transmittance * background
    return color, depth, 1 - transmittance


def _composite_all_tiles(
    projected: ProjectedGaussians, feats: Tensor, bins: TileBins, chunk_size: int
) -> tuple[Tensor, Tensor]:
    """Returns (busy tile ids [B], per-tile results [B, P, F + 1]: features then transmittance)."""
    device, dtype = feats.device, feats.dtype
    counts = bins.tile_offsets[1:] - bins.tile_offsets[:-1]
    busy = torch.nonzero(counts > 0).squeeze(-1)
    if busy.numel() == 0:
        return busy, feats.new_zeros(0, bins.tile_size**2, feats.shape[-1] + 1)
    table = _id_table(bins, counts, busy)
    pixels = _pixel_centres(busy, bins, dtype)
    live = torch.arange(busy.numel(), device=device)
    transmittance = torch.ones(busy.numel(), pixels.shape[1], dtype=dtype, device=device)
    done = torch.zeros_like(transmittance, dtype=torch.bool)
    accum = torch.zeros(busy.numel(), pixels.shape[1], feats.shape[-1], dtype=dtype, device=device)
    retired_ids, retired_rows = [], []
    for start in range(0, table.shape[1], chunk_size):
        ids = table[live, start : start + chunk_size]
        alpha = _chunk_alpha(projected, ids, pixels[live])
        t_incl = transmittance[:, :, None] * torch.cumprod(1 - alpha, dim=2)
        keep = (t_incl > MIN_TRANSMITTANCE) & ~done[:, :, None]
        t_excl = torch.cat([transmittance[:, :, None], t_incl[:, :, :-1]], dim=2)
        weights = torch.where(keep, alpha * t_excl, torch.zeros_like(alpha))
        accum = accum + torch.einsum("lpc,lcf->lpf", weights, feats[ids.clamp(min=0)])
        transmittance = transmittance * torch.prod(
            1 - torch.where(keep, alpha, torch.zeros_like(alpha)), dim=2
        )
        done = done | (t_incl[:, :, -1] <= MIN_TRANSMITTANCE)
        finished = done.all(dim=1) | (counts[busy[live]] <= start + chunk_size)
        if bool(finished.any()):
            retired_ids.append(busy[live[finished]])
            retired_rows.append(torch.cat([accum[finished], transmittance[finished, :, None]], dim=-1))
            live, accum, transmittance, done = (t[~finished] for t in (live, accum, transmittance, done))
        if live.numel() == 0:
            break
    return torch.cat(retired_ids), torch.cat(retired_rows)


def _id_table(bins: TileBins, counts: Tensor, busy: Tensor) -> Tensor:
    """[B, max_count] Gaussian ids of each busy tile, front to back, padded with -1."""
    device = counts.device
    tile_of = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts)
    rank = torch.arange(tile_of.numel(), device=device) - bins.tile_offsets[tile_of]
    slot = torch.full((counts.numel(),), -1, dtype=torch.long, device=device)
    slot[busy] = torch.arange(busy.numel(), device=device)
    table = torch.full((busy.numel(), int(counts.max())), -1, dtype=torch.long, device=device)
    table[slot[tile_of], rank] = bins.gaussian_ids
    return table


def _pixel_centres(busy: Tensor, bins: TileBins, dtype: torch.dtype) -> Tensor:
    """[B, P, 2] pixel centres (x + 0.5, y + 0.5) of the busy tiles, row-major within a tile."""
    size = bins.tile_size
    offs = torch.arange(size, dtype=dtype, device=busy.device) + 0.5
    py, px = torch.meshgrid(offs, offs, indexing="ij")
    local = torch.stack([px.reshape(-1), py.reshape(-1)], dim=-1)
    corner = torch.stack([(busy % bins.tiles_x) * size, (busy // bins.tiles_x) * size], dim=-1).to(dtype)
    return corner[:, None, :] + local[None]


def _chunk_alpha(projected: ProjectedGaussians, ids: Tensor, pixels: Tensor) -> Tensor:
    """[L, P, C] alpha of each chunk Gaussian at each pixel; zero where gsplat skips it or for padding."""
    safe = ids.clamp(min=0)
    delta = pixels[:, :, None, :] - projected.means2d[safe][:, None, :, :]
    a, b, c = (t[:, None, :] for t in projected.conics[safe].unbind(-1))
    dx, dy = delta[..., 0], delta[..., 1]
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp(projected.opacities[safe][:, None, :] * torch.exp(-sigma), max=MAX_ALPHA)
    valid = (sigma >= 0) & (alpha >= ALPHA_THRESHOLD) & (ids >= 0)[:, None, :]
    return torch.where(valid, alpha, torch.zeros_like(alpha))
